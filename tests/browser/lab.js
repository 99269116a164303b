// The first thing a data scientist does, in a real browser (headless Chromium): open a
// notebook's URL (on the notebook's own origin), get sent to the console's login page, log
// in with an API token, come back to JupyterLab on the notebook's origin (through a one-time
// ticket), open a notebook, run a cell and read its output. Prints what it saw; exits
// non-zero on failure. Driven by tests/tests/browser.rs.
//
// env: LAB_URL (http://{id}.nb.localhost:port/nb/{id}/lab), NOTEBOOK_ORIGIN (that URL's
// origin), TOKEN (an API token), JUPYTER_TOKEN (must not appear in the page), SCREENSHOT
// (where to save the final page), CHROMIUM (binary).
const { chromium } = require('playwright-core');

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const failures = [];
    page.on('response', (r) => { if (r.status() >= 500) failures.push(`${r.status()} ${r.url()}`); });
    await page.goto(process.env.LAB_URL);
    // Through the console's ticket endpoint (and a page that reloads it from the console's
    // own origin) to its login form.
    await page.waitForSelector('input[name=token]', { timeout: 30000 });
    console.log(`redirected to: ${new URL(page.url()).pathname}`);
    await page.fill('input[name=token]', process.env.TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(
      (u) => u.origin === process.env.NOTEBOOK_ORIGIN && u.pathname.endsWith('/lab'),
      { timeout: 60000 });
    const landed = new URL(page.url());
    console.log(`logged in at: ${landed.origin}${landed.pathname}`);
    await page.waitForSelector('.jp-LauncherCard[data-category="Notebook"]', { timeout: 60000 });
    await page.click('.jp-LauncherCard[data-category="Notebook"]');
    await page.waitForSelector('.jp-Notebook .jp-Cell .cm-content', { timeout: 60000 });
    // The kernel connects over a WebSocket through the gateway.
    await page.waitForSelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', { timeout: 60000 });
    // The editor may not take keys the moment it appears: type, check the cell holds the
    // code, run it, and try again (bounded) if no output comes.
    let ran = false;
    for (let attempt = 1; attempt <= 3 && !ran; attempt++) {
      const cell = page.locator('.jp-Notebook .jp-Cell').first();
      await cell.locator('.cm-content').click();
      await page.keyboard.press('Control+A');
      await page.keyboard.type('print(6*7)');
      const text = await cell.locator('.cm-content').textContent();
      if (!text.includes('print(6*7)')) {
        console.log(`attempt ${attempt}: the editor holds ${JSON.stringify(text)}`);
        await page.waitForTimeout(1000);
        continue;
      }
      await page.keyboard.press('Shift+Enter');
      ran = await page.waitForSelector('.jp-OutputArea-output', { timeout: 30000 })
        .then(() => true, () => false);
      if (!ran) console.log(`attempt ${attempt}: no output yet`);
    }
    if (!ran) throw new Error('the cell produced no output after 3 attempts');
    const output = (await page.textContent('.jp-OutputArea-output')).trim();
    console.log(`output: ${output}`);
    const html = await page.content();
    const cookies = JSON.stringify(await page.context().cookies());
    console.log(`jupyter token visible: ${html.includes(process.env.JUPYTER_TOKEN) || cookies.includes(process.env.JUPYTER_TOKEN)}`);
    // The auto-stop countdown at the top right, and its Renew button.
    const left = () => document.querySelector('.atelier-autostop-left')?.textContent || '';
    await page.waitForFunction((f) => /Stops in/.test(eval(f)()), left.toString(), { timeout: 30000 });
    console.log(`countdown: ${await page.evaluate((f) => eval(f)(), left.toString())}`);
    const before = await page.evaluate((f) => eval(f)(), left.toString());
    await page.click('.atelier-autostop-renew');
    await page.waitForFunction(
      ([f, b]) => /Stops in/.test(eval(f)()) && eval(f)() !== b && !/Renewing/.test(eval(f)()),
      [left.toString(), before], { timeout: 30000 });
    console.log(`renewed: ${await page.evaluate((f) => eval(f)(), left.toString())}`);
    console.log(`server errors: ${failures.length ? failures.join(', ') : 'none'}`);
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(`FAILED: ${e.message}`); process.exit(1); });
