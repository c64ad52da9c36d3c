// Dashboard: create a Vercel Sandbox whose requests to AI Gateway are sent to
// the proxy by the sandbox firewall (a forwardURL rule), with a Vercel-signed
// vercel-sandbox-oidc-token that identifies the sandbox. The sandbox holds no
// key at all; the proxy's vercel_sandbox block
// (examples/caddyfiles/sandbox-forwardurl.Caddyfile) verifies the token.
//
// Needs a version of @vercel/sandbox whose network policies support forwardURL.
import { Sandbox } from "@vercel/sandbox";

// Must equal the proxy's `vercel_sandbox { audience … }`: it is the token's aud.
const FORWARD_URL = "https://ai-proxy.example.com";

export async function createAgentSandbox(name: string) {
  return Sandbox.create({
    name, // the client name in the proxy's logs ({ai_gateway_auth.client})
    networkPolicy: {
      allow: {
        // Every HTTPS request for AI Gateway goes to the proxy instead. The
        // proxy keeps the path (vercel-forwarded-path) and always sends the
        // request to its own configured upstream.
        "ai-gateway.vercel.sh": [{ forwardURL: FORWARD_URL }],
        // Other domains the agent needs; anything not listed is blocked.
        "registry.npmjs.org": [],
      },
    },
    env: {
      // The agent talks to AI Gateway's real URL; the firewall redirects it.
      OPENAI_BASE_URL: "https://ai-gateway.vercel.sh/v1",
      ANTHROPIC_BASE_URL: "https://ai-gateway.vercel.sh",
      // SDKs refuse to start without a key. The proxy ignores and removes it.
      OPENAI_API_KEY: "sk-placeholder",
      ANTHROPIC_AUTH_TOKEN: "sk-placeholder",
      AI_GATEWAY_API_KEY: "sk-placeholder",
    },
  });
}
