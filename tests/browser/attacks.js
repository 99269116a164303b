// JavaScript on a notebook's page tries to use the gateway's API with its viewer's session,
// in a real browser (headless Chromium): on the page's own origin, and on the console's
// (with credentials, with and without CORS). Then the same user's console calls the API the
// way it is meant to. Prints one line per attempt; exits non-zero when the journey itself
// fails. Driven by tests/tests/attacks_browser.rs, which judges the lines.
//
// env: CONSOLE (the console's origin), NOTEBOOK_ID, NOTEBOOK_ORIGIN (where the notebook is
// served), TOKEN (the user's API token, to log in), CHROMIUM (binary).
const { chromium } = require('playwright-core');

const CONSOLE = process.env.CONSOLE;
const ID = process.env.NOTEBOOK_ID;
const NOTEBOOK_ORIGIN = process.env.NOTEBOOK_ORIGIN;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${CONSOLE}/login`);
    await page.fill('input[name=token]', process.env.TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${CONSOLE}/`, { timeout: 30000 });
    // The console's link opens the notebook on its own origin.
    await page.click(`a[href="/v1/notebooks/${ID}/open"]`);
    await page.waitForURL(
      (u) => u.origin === NOTEBOOK_ORIGIN && u.pathname === `/nb/${ID}/lab`,
      { timeout: 60000 });
    console.log(`notebook page origin: ${new URL(page.url()).origin}`);
    await page.waitForSelector('.jp-LauncherCard', { timeout: 60000 });

    const seen = await page.evaluate(async (consoleOrigin) => {
      const status = async (request) => {
        try {
          return String((await request).status);
        } catch (e) {
          return 'blocked';
        }
      };
      const json = { 'content-type': 'application/json', 'x-atelier-csrf': '1' };
      const out = {};
      out.whoami = await status(fetch('/v1/whoami'));
      out.mint = await status(fetch('/v1/users/alice/tokens', {
        method: 'POST', headers: json, body: JSON.stringify({ label: 'notebook-page-own' }),
      }));
      out.consoleWhoami = await status(fetch(`${consoleOrigin}/v1/whoami`, { credentials: 'include' }));
      out.consoleMint = await status(fetch(`${consoleOrigin}/v1/users/alice/tokens`, {
        method: 'POST', credentials: 'include', headers: json,
        body: JSON.stringify({ label: 'notebook-page-cors' }),
      }));
      try {
        const r = await fetch(`${consoleOrigin}/v1/users/alice/tokens`, {
          method: 'POST', mode: 'no-cors', credentials: 'include',
          headers: { 'content-type': 'text/plain' },
          body: JSON.stringify({ label: 'notebook-page-no-cors' }),
        });
        out.noCors = r.type;
      } catch (e) {
        out.noCors = 'blocked';
      }
      const ours = document.cookie.split(';').map((c) => c.trim())
        .filter((c) => /^(__Host-)?atelier_/.test(c));
      out.cookies = ours.length ? ours.join('; ') : 'none';
      return out;
    }, CONSOLE);
    console.log(`page: GET /v1/whoami: ${seen.whoami}`);
    console.log(`page: POST /v1/users/alice/tokens: ${seen.mint}`);
    console.log(`page: GET console /v1/whoami: ${seen.consoleWhoami}`);
    console.log(`page: POST console /v1/users/alice/tokens: ${seen.consoleMint}`);
    console.log(`page: no-cors POST console /v1/users/alice/tokens: ${seen.noCors}`);
    console.log(`page: cookies visible to JavaScript: ${seen.cookies}`);

    // The same user's console, in the same browser.
    const consolePage = await context.newPage();
    await consolePage.goto(`${CONSOLE}/`);
    const mine = await consolePage.evaluate(async () => {
      const me = await fetch('/v1/whoami');
      const body = { label: 'console' };
      const withHeader = await fetch('/v1/users/alice/tokens', {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-atelier-csrf': '1' },
        body: JSON.stringify(body),
      });
      const withoutHeader = await fetch('/v1/users/alice/tokens', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ label: 'console-without-header' }),
      });
      return {
        me: `${me.status} ${(await me.json()).name}`,
        withHeader: String(withHeader.status),
        withoutHeader: String(withoutHeader.status),
      };
    });
    console.log(`console: GET /v1/whoami: ${mine.me}`);
    console.log(`console: POST tokens with the header: ${mine.withHeader}`);
    console.log(`console: POST tokens without the header: ${mine.withoutHeader}`);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(`FAILED: ${e.message}`); process.exit(1); });
