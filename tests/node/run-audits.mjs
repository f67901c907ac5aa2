// Run graphql-http's GraphQL-over-HTTP server audits against a running endpoint.
//
//   node run-audits.mjs http://127.0.0.1:PORT/graphql
//
// With AUDIT_AUTHORIZATION set (e.g. "Bearer <token>"), every request carries it as its Authorization
// header: the gateway answers 401 before any GraphQL work to a request without a valid token.
//
// Prints one JSON line per audit: {"id", "name", "status", "reason"?, "responseStatus"?, "responseBody"?}.
// Exits 0 only when every audit is "ok"; 1 when any is "notice", "warn" or "error"; 2 on a usage error.
// The audits run one after another so a failure's response is easy to match to its request.
import { serverAudits } from 'graphql-http';

const REQUEST_TIMEOUT_MS = 10_000;
const BODY_PREVIEW_CHARS = 500;

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: node run-audits.mjs URL\n');
  process.exit(2);
}

/** fetch with a per-request timeout, so a hung server fails the audit instead of the whole run. */
const authorization = process.env.AUDIT_AUTHORIZATION;

function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (authorization) headers.set('authorization', authorization);
  return fetch(input, { ...init, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
}

async function describeResponse(response) {
  if (!response) return {};
  let body;
  try {
    body = (await response.text()).slice(0, BODY_PREVIEW_CHARS);
  } catch {
    body = undefined; // already read by the audit's own assertion
  }
  return { responseStatus: response.status, responseBody: body };
}

let failures = 0;
for (const { id, name, fn } of serverAudits({ url, fetchFn })) {
  let line;
  try {
    const result = await fn();
    line = { id, name, status: result.status };
    if (result.status !== 'ok') {
      line.reason = result.reason;
      Object.assign(line, await describeResponse(result.response));
    }
  } catch (error) {
    // graphql-http rethrows anything that is not an assertion failure (network errors, timeouts).
    line = { id, name, status: 'error', reason: `fatal: ${error?.stack ?? error}` };
  }
  if (line.status !== 'ok') failures += 1;
  process.stdout.write(JSON.stringify(line) + '\n');
}
process.exit(failures === 0 ? 0 : 1);
