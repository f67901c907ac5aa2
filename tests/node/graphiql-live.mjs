// GraphiQL as the gateway serves it, in headless Chromium, running a live subscription.
//
//   node graphiql-live.mjs BASE_URL TOKEN [SCREENSHOT.png]
//
// The page must load everything from the gateway: the browser context has no route to the internet
// (offline.mjs) and the script fails if a request outside the loopback was attempted or the page's CSP
// blocked anything. The token goes into GraphiQL's Headers tab (its `headers` URL parameter), exactly
// as a developer pastes it. Prints "subscribed" once the subscription runs, then {"result": ...} once
// the result pane shows an ACTIVE instance; exits 1 on a timeout or a page error.
import { chromium } from 'playwright-core';
import { launchOptions, offlineContext } from './offline.mjs';

const [base, token, screenshot] = process.argv.slice(2);
if (!base || !token) {
  process.stderr.write('usage: node graphiql-live.mjs BASE_URL TOKEN [SCREENSHOT.png]\n');
  process.exit(2);
}

const browser = await chromium.launch(launchOptions());
try {
  const { context, blocked } = await offlineContext(browser, { viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => process.stderr.write(`page error: ${error}\n`));
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
  const csp = await page.evaluate(() => window.__cspViolations);
  if (screenshot) await page.screenshot({ path: screenshot });
  process.stdout.write(JSON.stringify({ result: text, blocked, csp }) + '\n');
} finally {
  await browser.close();
}
