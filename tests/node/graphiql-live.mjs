// GraphiQL as the gateway serves it, in headless Chromium, running a live subscription.
//
//   node graphiql-live.mjs BASE_URL TOKEN [SCREENSHOT.png]
//
// The page loads GraphiQL from unpkg; here those files come from this folder's node_modules (the same
// pinned versions), since the test machine reaches no CDN. The token goes into GraphiQL's Headers tab
// (its `headers` URL parameter), exactly as a developer pastes it. Prints "subscribed" once the
// subscription runs, then {"result": ...} once the result pane shows an ACTIVE instance; exits 1 on a
// timeout or a page error.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [base, token, screenshot] = process.argv.slice(2);
if (!base || !token) {
  process.stderr.write('usage: node graphiql-live.mjs BASE_URL TOKEN [SCREENSHOT.png]\n');
  process.exit(2);
}

/** https://unpkg.com/<package>@<version>/<file> -> node_modules/<package>/<file> */
function localFile(url) {
  const rest = url.replace('https://unpkg.com/', '');
  const at = rest.startsWith('@') ? rest.indexOf('@', 1) : rest.indexOf('@');
  return path.join(here, 'node_modules', rest.slice(0, at), rest.slice(rest.indexOf('/', at)));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (error) => process.stderr.write(`page error: ${error}\n`));
  await page.route('https://unpkg.com/**', async (route) => {
    const file = localFile(route.request().url());
    const contentType = file.endsWith('.css') ? 'text/css' : 'application/javascript';
    await route.fulfill({ status: 200, contentType, body: fs.readFileSync(file) });
  });
  const headers = JSON.stringify({ Authorization: `Bearer ${token}` });
  const query = 'subscription { instanceStatusChanges { to instance { name status } } }';
  await page.goto(`${base}/graphql?headers=${encodeURIComponent(headers)}&q=${encodeURIComponent(query)}`);
  await page.waitForSelector('.graphiql-execute-button', { timeout: 30_000 });
  await page.click('.graphiql-execute-button');
  process.stdout.write('subscribed\n');
  await page.waitForFunction(
    () => document.querySelector('.result-window')?.innerText.includes('"ACTIVE"'),
    null,
    { timeout: 90_000 },
  );
  const text = await page.evaluate(() => document.querySelector('.result-window').innerText);
  if (screenshot) await page.screenshot({ path: screenshot });
  process.stdout.write(JSON.stringify({ result: text }) + '\n');
} finally {
  await browser.close();
}
