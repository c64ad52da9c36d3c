// Vercel Cron Job: push this project's OIDC token to the ai_gateway_auth
// proxy, which uses it for AI Gateway until a fresher one arrives.
// Schedule it in vercel.json (every 15 minutes; a token lives about an hour).
//
// Project environment variables:
//   AI_GATEWAY_AUTH_PUSH_URL  the proxy's push path, e.g. https://ai-proxy.example.com/ai-gateway-auth/token
//   CRON_SECRET               random, 16+ characters; Vercel Cron sends it as Authorization: Bearer <CRON_SECRET>
import { getVercelOidcToken } from "@vercel/oidc";

export const dynamic = "force-dynamic";

export async function GET(request: Request): Promise<Response> {
  const cronSecret = process.env.CRON_SECRET;
  if (!cronSecret || request.headers.get("authorization") !== `Bearer ${cronSecret}`) {
    return new Response("unauthorized", { status: 401 });
  }
  const pushURL = process.env.AI_GATEWAY_AUTH_PUSH_URL;
  if (!pushURL) {
    return new Response("AI_GATEWAY_AUTH_PUSH_URL is not set", { status: 500 });
  }

  // The token of this invocation (x-vercel-oidc-token), else VERCEL_OIDC_TOKEN.
  const token = await getVercelOidcToken();

  // No shared secret: the proxy verifies the token's signature, issuer,
  // expiry, team (owner_id) and project (project_id) itself.
  const res = await fetch(pushURL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 204) {
    // 400 bad body, 401 token did not verify, 413 body too large,
    // 422 token for another team or project. The JSON error never holds the token.
    const detail = await res.text();
    console.error(`token push refused: ${res.status} ${detail}`);
    return new Response(`token push refused: ${res.status}`, { status: 502 });
  }
  // false: the proxy already holds a token that expires later.
  const used = res.headers.get("ai-gateway-auth-token-used") === "true";
  return Response.json({ pushed: true, used });
}
