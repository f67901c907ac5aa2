// The dashboard's PKCE pieces (gateway/static/dashboard/pkce.js) under Node's WebCrypto, which is the
// browser's API: prints one JSON report for tests/test_dashboard_pkce.py to judge.
import { authorizeUrl, codeChallenge, codeVerifier, endSessionUrl, finishSignIn } from '../../gateway/static/dashboard/pkce.js';

const storage = new Map();
const session = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v), removeItem: (k) => storage.delete(k) };
const oidc = {
  clientId: 'dash-client',
  authorize: 'https://issuer.example/oauth/v2/authorize',
  token: 'https://issuer.example/oauth/v2/token',
  endSession: 'https://issuer.example/oidc/v1/end_session',
  scope: 'openid urn:zitadel:iam:org:project:id:p1:aud',
};
const report = {};
// RFC 7636 Appendix B.
report.rfcChallenge = await codeChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk');
report.verifiers = [codeVerifier(), codeVerifier()];

const url = new URL(await authorizeUrl(oidc, 'http://gw.example/dashboard', session));
report.authorize = Object.fromEntries(url.searchParams);
report.authorizeBase = url.origin + url.pathname;
const pending = JSON.parse(storage.get('opencsp.oidc.pending'));
report.firstVerifier = pending.verifier;
report.challengeMatchesStoredVerifier = (await codeChallenge(pending.verifier)) === url.searchParams.get('code_challenge');

// The issuer's answer with another state (a forged or stale redirect): refused, nothing fetched.
let fetched = 0;
try {
  await finishSignIn(oidc, '?code=c1&state=forged', session, async () => { fetched += 1; });
  report.forged = 'accepted';
} catch (error) {
  report.forged = error.message;
}
report.fetchedForForged = fetched;

// The matching answer: the code is exchanged with the verifier, as a form POST to the token endpoint.
await authorizeUrl(oidc, 'http://gw.example/dashboard', session);
const { state, verifier } = JSON.parse(storage.get('opencsp.oidc.pending'));
let sent = null;
const result = await finishSignIn(oidc, `?code=c2&state=${state}`, session, async (target, init) => {
  sent = { target, method: init.method, type: init.headers['Content-Type'], body: Object.fromEntries(new URLSearchParams(init.body)) };
  return { ok: true, status: 200, json: async () => ({ access_token: 'at-1', id_token: 'id-1', token_type: 'Bearer' }) };
});
report.exchange = { sent, result, verifierSent: sent.body.code_verifier === verifier, pendingCleared: !storage.has('opencsp.oidc.pending') };
// A replay of the same redirect finds no pending sign-in.
try {
  await finishSignIn(oidc, `?code=c2&state=${state}`, session, async () => ({}));
  report.replay = 'accepted';
} catch (error) {
  report.replay = error.message;
}
// The issuer refuses the code.
await authorizeUrl(oidc, 'http://gw.example/dashboard', session);
const again = JSON.parse(storage.get('opencsp.oidc.pending')).state;
try {
  await finishSignIn(oidc, `?code=c3&state=${again}`, session, async () => ({ ok: false, status: 400, json: async () => ({ error: 'invalid_grant', error_description: 'code expired' }) }));
  report.refused = 'accepted';
} catch (error) {
  report.refused = error.message;
}
try {
  await finishSignIn(oidc, '?error=access_denied&error_description=no', session);
} catch (error) {
  report.denied = error.message;
}
report.none = await finishSignIn(oidc, '?foo=1', session);
report.endSession = Object.fromEntries(new URL(endSessionUrl(oidc, 'id-1', 'http://gw.example/dashboard')).searchParams);
process.stdout.write(JSON.stringify(report) + '\n');
