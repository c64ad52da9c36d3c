// Signed client keys for ai_gateway_auth (`client_key_secret`):
//   sk-aigw-<name>.<sig>, sig = unpadded base64url(HMAC-SHA256(name)) under the secret.
// The proxy accepts the key as the client <name> (the {ai_gateway_auth.client}
// placeholder) until <name> is listed in its client_keys_revoked_file.
// `caddy ai-gateway-auth client-key <name>` prints the same key. Test vector:
//   signClientKey("sandbox-42", "0123456789abcdef0123456789abcdef")
//   === "sk-aigw-sandbox-42._lwYcwv6ZWup_pqdatx4liwTogYEKI9M3_q7heZNr10"
import { createHmac } from "node:crypto";

const CLIENT_NAME = /^[A-Za-z0-9_-]{1,128}$/;

export function signClientKey(name: string, secret: string): string {
  if (!CLIENT_NAME.test(name)) {
    throw new Error("client name must be 1-128 characters of A-Z, a-z, 0-9, _ and -");
  }
  if (Buffer.byteLength(secret, "utf8") < 16) {
    throw new Error("the secret must be at least 16 bytes, as the proxy requires");
  }
  // Node's "base64url" digest has no "=" padding, as the proxy expects.
  const sig = createHmac("sha256", secret).update(name).digest("base64url");
  return `sk-aigw-${name}.${sig}`;
}
