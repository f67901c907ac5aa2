// The dashboard as the gateway serves it, in headless Chromium with no route to the internet.
//
//   node dashboard-live.mjs BASE_URL PLAN_JSON
//
// PLAN_JSON: {"viewerToken": …, "userToken": …, "expiringToken": …, "screenshots": DIR}. One browser, three contexts
// (each its own sessionStorage):
//   expiry  — pastes a short-lived token, sees the live feed, then sees it closed with a message;
//   user    — signs in with the dev role picker, creates an instance, records every status its row
//             shows until ACTIVE (without a reload), checks the counts, the feed, the timeline and an
//             inline userError; screenshots at laptop and phone widths;
//   viewer  — pastes a viewer token: the instance shows, actions and addresses do not; then its
//             websocket is cut and reconnections refused: it shows offline, retries with backoff, and
//             once back shows the instance a `user` (plan.userToken, over HTTP) created meanwhile.
//   oidc    — signs in with OIDC code + PKCE at the stand-in issuer (tests/peers/oidc_provider.py),
//             lands on /dashboard with the token in sessionStorage only; as an operator of another
//             org, sees its instance FAIL, retries it to ACTIVE, deletes it; signs out there.
// The expiry and oidc contexts run alongside the others, so the token's lifetime costs no extra time.
// Prints one JSON report; exits 1 on a timeout or a page error.
import { chromium } from 'playwright-core';
import path from 'node:path';
import { launchOptions, offlineContext } from './offline.mjs';

const [base, planText] = process.argv.slice(2);
if (!base || !planText) {
  process.stderr.write('usage: node dashboard-live.mjs BASE_URL PLAN_JSON\n');
  process.exit(2);
}
const plan = JSON.parse(planText);
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const errors = [];
const report = { blocked: [], csp: [] };

async function open(browser, viewport) {
  const { context, blocked } = await offlineContext(browser, { viewport });
  const page = await context.newPage();
  page.on('pageerror', (error) => errors.push(String(error)));
  return { context, blocked, page };
}

async function finish(name, { context, blocked, page }) {
  report.blocked.push(...blocked);
  report.csp.push(...(await page.evaluate(() => window.__cspViolations)).map((v) => `${name}: ${v}`));
  await context.close();
}

async function pasteToken(page, token) {
  await page.goto(`${base}/dashboard`);
  await page.getByLabel('Paste an access token').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

const waitFor = (page, fn, arg, timeout = 60_000) => page.waitForFunction(fn, arg, { timeout });

async function expiry(browser) {
  const session = await open(browser, LAPTOP);
  const { page } = session;
  await page.goto(`${base}/dashboard`);
  await page.waitForSelector('#token-sign-in');
  const signedOut = {
    signOutVisible: await page.getByRole('button', { name: 'Sign out' }).isVisible(),
    text: await page.locator('#sign-in').innerText(),
  };
  await pasteToken(page, plan.expiringToken);
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'live');
  const result = { live: true, signedOut };
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'expired', null, 90_000);
  result.pill = await page.locator('#connection').innerText();
  result.notice = await page.locator('#notice').innerText();
  result.signInShown = await page.locator('#token-sign-in').isVisible();
  result.signOutVisible = await page.getByRole('button', { name: 'Sign out' }).isVisible();
  await finish('expiry', session);
  return result;
}

async function user(browser) {
  const session = await open(browser, LAPTOP);
  const { page } = session;
  await page.goto(`${base}/`);
  await page.getByLabel('Role').selectOption('user');
  await page.getByRole('button', { name: 'Sign in as this role' }).click();
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'live');
  await page.evaluate(() => {
    window.__sameDocument = true; // a reload would lose it
    window.__seen = [];
    const record = () => {
      const row = document.querySelector('#instance-rows tr[data-name="web-1"]');
      const status = row?.dataset.status;
      if (status && window.__seen.at(-1) !== status) window.__seen.push(status);
    };
    new MutationObserver(record).observe(document.getElementById('instance-rows'), {
      subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'],
    });
  });
  const activeBefore = await page.locator('[data-count="ACTIVE"]').innerText();
  // By keyboard: type the name and press Enter in the field.
  await page.getByLabel('Name').fill('web-1');
  await page.getByLabel('Name').press('Enter');
  await waitFor(page, () => document.querySelector('tr[data-name="web-1"]')?.dataset.status === 'ACTIVE');
  const result = {
    seen: await page.evaluate(() => window.__seen),
    sameDocument: await page.evaluate(() => window.__sameDocument === true),
    activeBefore,
    activeAfter: await page.locator('[data-count="ACTIVE"]').innerText(),
    total: await page.locator('[data-count="TOTAL"]').innerText(),
    feed: await page.locator('#feed li').allInnerTexts(),
    deleteButton: await page.getByRole('button', { name: 'Delete web-1' }).count(),
  };
  await page.getByRole('button', { name: 'History of web-1' }).click();
  await waitFor(page, () => document.querySelectorAll('.timeline .events li').length >= 4);
  result.timeline = await page.locator('.timeline .events li').allInnerTexts();
  // Every control has an accessible name (a label, aria-label or text).
  result.unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea')]
      .filter((node) => !(node.getAttribute('aria-label') || node.labels?.length || node.textContent.trim()))
      .map((node) => node.outerHTML.slice(0, 80)),
  );
  // Day-2 from the row: stop the VM, then start it; every power state and task is drawn live.
  await page.evaluate(() => {
    window.__power = [];
    const record = () => {
      const shown = document.querySelector('tr[data-name="web-1"] .power')?.textContent;
      if (shown && window.__power.at(-1) !== shown) window.__power.push(shown);
    };
    new MutationObserver(record).observe(document.getElementById('instance-rows'), {
      subtree: true, childList: true, characterData: true, attributes: true,
    });
    record();
  });
  const settled = (power) => {
    const row = document.querySelector('tr[data-name="web-1"]');
    return row?.dataset.power === power && row.dataset.task === '';
  };
  result.powerButtons = await page.locator('tr[data-name="web-1"] .actions button').allInnerTexts();
  await page.getByRole('button', { name: 'Stop web-1' }).click();
  await waitFor(page, settled, 'STOPPED');
  result.stoppedButtons = await page.locator('tr[data-name="web-1"] .actions button').allInnerTexts();
  await page.getByRole('button', { name: 'Start web-1' }).click();
  await waitFor(page, settled, 'RUNNING');
  result.power = await page.evaluate(() => window.__power);
  result.powerFeed = await page.locator('#feed li').allInnerTexts();
  // A name the server refuses: its userError shows next to the field.
  await page.getByLabel('Name').fill('Not A DNS Label');
  await page.getByRole('button', { name: 'Create instance' }).click();
  await waitFor(page, () => document.getElementById('create-name-error').textContent.length > 0);
  result.nameError = await page.locator('#create-name-error').innerText();
  result.nameInvalid = await page.getByLabel('Name').getAttribute('aria-invalid');
  await page.getByLabel('Name').fill('');
  await page.locator('#create-name-error').evaluate((node) => { node.textContent = ''; });
  await page.getByLabel('Name').evaluate((node) => node.removeAttribute('aria-invalid'));
  await page.locator('#create-name').blur();
  if (plan.screenshots) {
    await page.screenshot({ path: path.join(plan.screenshots, 'dashboard.png') });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: path.join(plan.screenshots, 'dashboard-phone.png') });
  }
  await finish('user', session);
  return result;
}

async function graphql(token, query, variables = {}) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()).data;
}

async function viewer(browser) {
  const session = await open(browser, PHONE);
  const { page } = session;
  // The page's websocket passes through here, so the test can cut it and refuse reconnections.
  let cut = null;
  let refusing = false;
  await page.routeWebSocket(/\/graphql$/, (socket) => {
    if (refusing) return socket.close({ code: 1012, reason: 'test: gateway restarting' });
    const server = socket.connectToServer();
    cut = () => {
      socket.close({ code: 1012, reason: 'test: connection lost' });
      server.close();
    };
  });
  await pasteToken(page, plan.viewerToken);
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'live');
  await waitFor(page, () => document.querySelector('tr[data-name="web-1"]') !== null);
  const result = {
    rows: await page.locator('#instance-rows tr[data-name]').count(),
    buttons: await page.locator('#board button').allInnerTexts(),
    createForm: await page.locator('#create-form').count(),
    addressCells: await page.locator('td.address').count(),
    headers: await page.locator('#instances thead th').allInnerTexts(),
  };
  // Offline: the socket drops and reconnections fail for a while; meanwhile an instance is created and
  // finishes, so no event of it is left to arrive: only re-reading the list after reconnecting shows it.
  await page.evaluate(() => {
    window.__states = [];
    const pill = document.getElementById('connection');
    new MutationObserver(() => window.__states.push(pill.textContent)).observe(pill, { childList: true, characterData: true, subtree: true });
  });
  refusing = true;
  cut();
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'offline');
  const created = await graphql(plan.userToken, 'mutation { createInstance(input: {name: "web-2", flavor: "small", image: "debian-12"}) { instance { id } } }');
  const id = created.createInstance.instance.id;
  for (let status = ''; status !== 'ACTIVE'; await sleep(100)) {
    status = (await graphql(plan.userToken, 'query($id: ID!) { instance(id: $id) { status } }', { id })).instance.status;
  }
  // At least two refused attempts, so the page has shown its backoff twice.
  await waitFor(page, () => window.__states.filter((text) => text.startsWith('Offline — retrying in')).length >= 2);
  result.missedWhileOffline = await page.locator('tr[data-name="web-2"]').count();
  refusing = false;
  await waitFor(page, () => document.getElementById('connection').dataset.state === 'live');
  await waitFor(page, () => document.querySelector('tr[data-name="web-2"]') !== null);
  result.states = await page.evaluate(() => window.__states);
  result.afterReconnect = await page.locator('tr[data-name="web-2"]').getAttribute('data-status');
  result.total = await page.locator('[data-count="TOTAL"]').innerText();
  await finish('viewer', session);
  return result;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function oidc(browser) {
  const session = await open(browser, LAPTOP);
  const { page } = session;
  await page.goto(`${base}/dashboard`);
  await page.getByRole('button', { name: 'Sign in with your organisation' }).click();
  await waitFor(page, () => document.getElementById('connection')?.dataset.state === 'live');
  const result = {
    url: page.url(),
    who: await page.locator('#who-name').innerText(),
    stored: await page.evaluate(() => Object.keys(sessionStorage)),
    local: await page.evaluate(() => localStorage.length),
  };
  // The OIDC user is an operator of another org: it fails, retries and deletes its own instance.
  await page.getByLabel('Name').fill('fail-prov-1');
  await page.getByLabel('Name').press('Enter');
  await waitFor(page, () => document.querySelector('tr[data-name="fail-prov-1"]')?.dataset.status === 'FAILED');
  result.failedRow = await page.locator('tr[data-name="fail-prov-1"]').innerText();
  await page.getByRole('button', { name: 'Retry fail-prov-1' }).click();
  await waitFor(page, () => document.querySelector('tr[data-name="fail-prov-1"]')?.dataset.status === 'ACTIVE');
  result.retryAfterActive = await page.getByRole('button', { name: 'Retry fail-prov-1' }).count();
  const remove = page.getByRole('button', { name: 'Delete fail-prov-1' });
  await remove.click();
  result.armed = await remove.innerText();
  await remove.click();
  await waitFor(page, () => document.querySelector('tr[data-name="fail-prov-1"]') === null);
  result.totalAfterDelete = await page.locator('[data-count="TOTAL"]').innerText();
  const endSession = page.waitForResponse((response) => response.url().includes('/oidc/v1/end_session'));
  await page.getByRole('button', { name: 'Sign out' }).click();
  await endSession;
  await page.waitForLoadState();
  await page.waitForSelector('#token-sign-in');
  result.afterSignOut = await page.evaluate(() => Object.keys(sessionStorage));
  await finish('oidc', session);
  return result;
}

const browser = await chromium.launch(launchOptions());
try {
  const expiring = expiry(browser);
  const signingIn = oidc(browser);
  report.user = await user(browser);
  report.viewer = await viewer(browser);
  report.expiry = await expiring;
  report.oidc = await signingIn;
} finally {
  await browser.close();
}
report.errors = errors;
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(errors.length ? 1 : 0);
