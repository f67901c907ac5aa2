// A browser context with no route to the internet: every request to a host other than the loopback
// gateway is aborted and recorded, so a test can assert that none was even attempted. CSP violations
// the page reports are recorded too (window.__cspViolations).
export async function offlineContext(browser, options = {}) {
  const context = await browser.newContext(options);
  const blocked = [];
  await context.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) || url.protocol === 'data:') {
      await route.continue();
    } else {
      blocked.push(url.toString());
      await route.abort('internetdisconnected');
    }
  });
  context.on('websocket', () => {}); // websockets are not routed; the gateway's is same-origin
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  return { context, blocked };
}

export function launchOptions() {
  return {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  };
}
