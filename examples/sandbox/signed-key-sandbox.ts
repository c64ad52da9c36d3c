// Dashboard: create a Vercel Sandbox whose agents reach AI Gateway through
// the proxy with a signed client key (examples/caddyfiles/signed-keys.Caddyfile).
// The key is fixed for the sandbox's life: it survives snapshots and restores,
// and never needs refreshing. Revoke it by adding the name to the proxy's
// client_keys_revoked_file.
//
// Dashboard environment: CLIENT_KEY_SECRET (the proxy's client_key_secret),
// AI_GATEWAY_AUTH_URL (e.g. https://ai-proxy.example.com).
import { randomUUID } from "node:crypto";
import { Sandbox } from "@vercel/sandbox";
import { signClientKey } from "./client-key";

export async function createAgentSandbox() {
  const proxy = process.env.AI_GATEWAY_AUTH_URL ?? "https://ai-proxy.example.com";
  const secret = process.env.CLIENT_KEY_SECRET;
  if (!secret) throw new Error("CLIENT_KEY_SECRET is not set");

  const name = `agent-${randomUUID()}`; // also the client name in the proxy's logs
  const key = signClientKey(name, secret);

  const sandbox = await Sandbox.create({
    name,
    env: {
      // OpenAI-compatible clients (the SDK appends /chat/completions, /responses, ...)
      OPENAI_BASE_URL: `${proxy}/v1`,
      OPENAI_API_KEY: key,
      // Anthropic-compatible clients and Claude Code (the SDK appends /v1/messages)
      ANTHROPIC_BASE_URL: proxy,
      ANTHROPIC_AUTH_TOKEN: key,
    },
  });
  return { sandbox, clientName: name };
}
