// OIDC authorization code + PKCE (RFC 7636) for a public client, with WebCrypto only.
//
// The verifier and state live in sessionStorage between the redirect to the issuer and the way back;
// the code is exchanged for an access token by a CORS POST to the issuer's token endpoint (ZITADEL's
// /oauth/v2/token allows it for "User Agent" apps). No client secret exists or is needed.

const PENDING = 'opencsp.oidc.pending';

/** base64url without padding (RFC 4648 §5), as PKCE and JWTs use. */
export function base64url(bytes) {
  let binary = '';
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A fresh code verifier: 32 random bytes, 43 characters (RFC 7636 §4.1 allows 43 to 128). */
export function codeVerifier(random = crypto) {
  return base64url(random.getRandomValues(new Uint8Array(32)));
}

/** The S256 challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))) (RFC 7636 §4.2). */
export async function codeChallenge(verifier, subtle = crypto.subtle) {
  return base64url(await subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
}

/** Where to send the browser to sign in; remembers verifier and state for `finishSignIn`. */
export async function authorizeUrl(oidc, redirectUri, storage = sessionStorage) {
  const verifier = codeVerifier();
  const state = codeVerifier();
  storage.setItem(PENDING, JSON.stringify({ verifier, state, redirectUri }));
  const url = new URL(oidc.authorize);
  url.search = new URLSearchParams({
    client_id: oidc.clientId,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: oidc.scope,
    code_challenge: await codeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
  }).toString();
  return url.toString();
}

/**
 * Completes a sign-in when the page is the redirect target (?code=…&state=…): checks the state,
 * exchanges the code with the verifier, and returns {accessToken, idToken}. Returns null when the URL
 * carries no code. Throws an Error with a message fit for the page on any mismatch or refusal.
 */
export async function finishSignIn(oidc, search, storage = sessionStorage, fetchImpl = fetch) {
  const parameters = new URLSearchParams(search);
  if (parameters.has('error')) {
    storage.removeItem(PENDING);
    throw new Error(`Sign-in refused: ${parameters.get('error_description') || parameters.get('error')}`);
  }
  const code = parameters.get('code');
  if (!code) return null;
  const pending = JSON.parse(storage.getItem(PENDING) || 'null');
  storage.removeItem(PENDING);
  if (!pending || pending.state !== parameters.get('state')) {
    throw new Error('Sign-in failed: the answer does not match a sign-in this tab started.');
  }
  const response = await fetchImpl(oidc.token, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: pending.redirectUri,
      client_id: oidc.clientId,
      code_verifier: pending.verifier,
    }).toString(),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || typeof body.access_token !== 'string') {
    throw new Error(`Sign-in failed: ${body.error_description || body.error || `HTTP ${response.status}`}`);
  }
  return { accessToken: body.access_token, idToken: typeof body.id_token === 'string' ? body.id_token : null };
}

/** The issuer's end-session URL (sign out there too), back to `redirectUri` afterwards. */
export function endSessionUrl(oidc, idToken, redirectUri) {
  const url = new URL(oidc.endSession);
  const parameters = new URLSearchParams({ client_id: oidc.clientId, post_logout_redirect_uri: redirectUri });
  if (idToken) parameters.set('id_token_hint', idToken);
  url.search = parameters.toString();
  return url.toString();
}
