// SPDX-License-Identifier: Apache-2.0
// The page that vitmae-server serves, in a real browser (Debian's chromium, headless): it uploads
// IMAGE through #file, waits for the reconstruction panel and the top-5 labels, and holds them equal
// to what the API answers to the same request sent from here; then it moves the mask-ratio slider and
// the seed with the keyboard and checks the new panel, and downloads embedding.json and checks it.
// Usage: node page_test.mjs URL IMAGE SCREENSHOT_PNG [--api-key KEY]
// Prints one line per check; exits 0 when all pass, 1 with one line 'page_test: FAIL: ...' otherwise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import puppeteer from 'puppeteer-core';

const CHROMIUM = '/usr/bin/chromium';
const WAIT_MS = 60000;
const KEY_STORAGE = 'vitmae-server-api-key';

const argv = process.argv.slice(2);
let apiKey = null;
const keyAt = argv.indexOf('--api-key');
if (keyAt >= 0) apiKey = argv.splice(keyAt, 2)[1];
if (argv.length !== 3 || (keyAt >= 0 && !apiKey)) {
  console.log('usage: node page_test.mjs URL IMAGE SCREENSHOT_PNG [--api-key KEY]');
  process.exit(2);
}
const [url, imagePath, shotPath] = argv;
const base = new URL(url);

class Failure extends Error {}
const fail = (message) => {
  throw new Failure(message);
};
const ok = (message) => console.log(`ok: ${message}`);

const consoleErrors = [];
function checkConsole() {
  if (consoleErrors.length) fail(`the page logged an error: ${consoleErrors[0]}`);
}

// The API, asked from here as the page asks it.
async function api(route, params, bytes, type) {
  const target = new URL(route, base);
  for (const [k, v] of Object.entries(params)) target.searchParams.set(k, String(v));
  const headers = { 'Content-Type': type };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const res = await fetch(target, { method: 'POST', headers, body: bytes });
  const text = await res.text();
  if (!res.ok) fail(`${route} answered HTTP ${res.status}: ${text.slice(0, 200)}`);
  return { text, json: JSON.parse(text) };
}

// Waits until the page is idle in the wanted way; types the API key into the page's form when
// asked for it. want: 'ready' (models listed), 'results' (panel and labels shown), 'changed' (a
// panel other than `previous`), 'idle'.
let keyTyped = 0;
async function waitFor(page, want, what, previous = '') {
  for (;;) {
    const handle = await page
      .waitForFunction(
        (want, previous) => {
          const $ = (id) => document.getElementById(id);
          const state = document.body.dataset.state;
          if (!$('auth').hidden) return 'auth';
          if (state === 'error') return 'error';
          if (state !== 'done' && state !== 'ready') return false;
          const panel = $('panel');
          const hasPanel =
            panel.src.startsWith('data:image/png;base64,') && panel.complete && panel.getClientRects().length > 0;
          const hasLabels = document.querySelectorAll('#labels li.label').length > 0;
          if (want === 'results') return state === 'done' && hasPanel && hasLabels && 'ok';
          if (want === 'changed') return state === 'done' && hasPanel && panel.src !== previous && 'ok';
          return 'ok';
        },
        { timeout: WAIT_MS, polling: 100 },
        want,
        previous
      )
      .catch((e) => fail(`no ${what} within ${WAIT_MS / 1000} s (${e.message.split('\n')[0]})`));
    const outcome = await handle.jsonValue();
    if (outcome === 'auth') {
      if (!apiKey) fail('the page asks for an API key: pass --api-key KEY');
      const message = await page.$eval('#auth-message', (e) => e.textContent);
      if (keyTyped++) fail(`the page asks for the API key again after it was given: ${message}`);
    }
    checkConsole();
    if (outcome === 'ok') return;
    if (outcome === 'error')
      fail(`waiting for ${what}, the page shows an error: ${await page.$eval('#status', (e) => e.textContent)}`);
    await page.type('#api-key', apiKey);
    await page.click('#api-key-submit');
    ok('typed the API key into the page when asked for it');
  }
}

async function checkPanel(page, bytes, type, when) {
  const shown = await page.evaluate(() => ({
    model: document.getElementById('reconstruct-model').value,
    maskRatio: document.getElementById('mask-ratio').value,
    seed: document.getElementById('seed').value,
    src: document.getElementById('panel').src,
    width: document.getElementById('panel').naturalWidth,
    loss: document.getElementById('loss').textContent,
    columns: [...document.querySelectorAll('.columns span')].map((e) => e.textContent),
  }));
  const params = { model: shown.model, mask_ratio: shown.maskRatio, seed: shown.seed, format: 'json' };
  const { json } = await api('/v1/reconstruct', params, bytes, type);
  const what = `model=${shown.model} mask_ratio=${shown.maskRatio} seed=${shown.seed}`;
  const b64 = shown.src.replace(/^data:image\/png;base64,/, '');
  if (b64 !== json.panel_png)
    fail(`${when}: the page's panel (${b64.length} base64 chars) differs from /v1/reconstruct's panel_png ` +
      `(${String(json.panel_png).length}) for ${what}`);
  if (!(shown.width > 0)) fail(`${when}: the panel image did not decode`);
  if (shown.loss !== json.loss.toPrecision(4)) fail(`${when}: the page shows loss ${shown.loss}, the API ${json.loss}`);
  const expected = ['original', 'masked', 'reconstruction', 'reconstruction + visible'];
  if (!isDeepStrictEqual(shown.columns, expected)) fail(`the panel's column labels are ${JSON.stringify(shown.columns)}`);
  ok(`${when}: the panel (${shown.width} px wide) equals /v1/reconstruct's panel_png for ${what}, loss ${shown.loss}`);
  return shown.src;
}

async function checkLabels(page, bytes, type) {
  const shown = await page.evaluate(() => ({
    model: document.getElementById('classify-model').value,
    labels: [...document.querySelectorAll('#labels li.label')].map((li) => ({
      index: li.dataset.index,
      label: li.dataset.label,
      prob: li.dataset.prob,
      bar: li.querySelector('.bar span').getBoundingClientRect().width / li.querySelector('.bar').clientWidth,
    })),
  }));
  const { json } = await api('/v1/classify', { model: shown.model, top_k: 5 }, bytes, type);
  const top = json.data[0].top.map((t) => ({ index: String(t.index), label: t.label, prob: String(t.prob) }));
  const labels = shown.labels.map(({ index, label, prob }) => ({ index, label, prob }));
  if (!isDeepStrictEqual(labels, top))
    fail(`the page's labels ${JSON.stringify(labels)} differ from /v1/classify's top-5 ${JSON.stringify(top)}`);
  for (const l of shown.labels)
    if (Math.abs(l.bar - Number(l.prob)) > 0.01) fail(`the bar of '${l.label}' is ${l.bar} wide for prob ${l.prob}`);
  ok(`${labels.length} labels equal /v1/classify's top-5 for model=${shown.model} ` +
    `(first: ${labels[0].label} ${labels[0].prob}), bars as wide as the probabilities`);
}

async function checkDownload(page, browser, bytes, type, downloads) {
  if (await page.$eval('#embeddings-section', (e) => e.hidden)) return ok('no model serves /v1/embeddings: no download');
  const session = await browser.target().createCDPSession();
  await session.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
  await page.select('#pooling', 'mean');
  const model = await page.$eval('#embeddings-model', (e) => e.value);
  await page.click('#download-embedding');
  await waitFor(page, 'idle', 'embedding download');
  const file = path.join(downloads, 'embedding.json');
  const deadline = Date.now() + WAIT_MS;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) fail(`no embedding.json downloaded within ${WAIT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const got = JSON.parse(fs.readFileSync(file, 'utf8'));
  const { json } = await api('/v1/embeddings', { model, pooling: 'mean' }, bytes, type);
  if (!isDeepStrictEqual(got, json)) fail(`the downloaded embedding.json differs from /v1/embeddings for model=${model}`);
  ok(`embedding.json downloaded equals /v1/embeddings for model=${model} pooling=mean ` +
    `(${json.data[0].embedding.length} numbers)`);
}

async function main(tmp) {
  const bytes = fs.readFileSync(imagePath);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    defaultViewport: { width: 1200, height: 900 },
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(tmp, 'profile')}`,
    ],
  });
  closeBrowser = () => browser.close();
  killBrowser = () => browser.process()?.kill('SIGKILL');
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (apiKey && m.text().includes('status of 401')) return; // the page's requests before the key
    consoleErrors.push(`${m.text()} (${m.location().url || 'page'})`);
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));

  const res = await page.goto(url, { waitUntil: 'load', timeout: WAIT_MS });
  if (!res || !res.ok()) fail(`GET ${url} answered HTTP ${res ? res.status() : 'nothing'}`);
  await waitFor(page, 'ready', 'model list');
  for (const section of ['reconstruct', 'classify'])
    if (await page.$eval(`#${section}-section`, (e) => e.hidden))
      fail(`the page shows no ${section} section: /v1/models lists no model for /v1/${section}`);
  const chosen = await page.evaluate(() =>
    ['reconstruct', 'classify', 'embeddings'].map((t) => `${t}=${document.getElementById(`${t}-model`).value}`));
  ok(`page loaded, models ${chosen.join(' ')}`);

  const input = await page.$('#file');
  await input.uploadFile(path.resolve(imagePath));
  const type = await page.$eval('#file', (e) => e.files[0].type || 'application/octet-stream');
  await waitFor(page, 'results', 'panel and labels');
  const first = await checkPanel(page, bytes, type, 'after upload');
  await checkLabels(page, bytes, type);
  await page.screenshot({ path: shotPath, fullPage: true });
  ok(`screenshot saved to ${shotPath}`);

  // The slider and the seed, moved as a person would: five steps left (0.25 less), seed typed.
  await page.focus('#mask-ratio');
  for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowLeft');
  await page.click('#seed', { clickCount: 3 });
  await page.keyboard.type('1');
  await waitFor(page, 'changed', 'new panel after the slider and seed moved', first);
  await checkPanel(page, bytes, type, 'after slider and seed');

  await checkDownload(page, browser, bytes, type, path.join(tmp, 'downloads'));
  if (apiKey) {
    const kept = await page.evaluate((k) => sessionStorage.getItem(k), KEY_STORAGE);
    if (kept !== apiKey) fail('the page did not keep the API key in sessionStorage');
    ok(keyTyped ? 'the API key asked for once and kept in sessionStorage' : 'the server did not ask for the API key');
  }
  checkConsole();
  ok('no console error and no page error');
}

let closeBrowser = async () => {};
let killBrowser = () => {};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vitmae-page-test-'));
const watchdog = setTimeout(() => {
  console.log('page_test: FAIL: the whole test took over 5 minutes');
  killBrowser();
  process.exit(1);
}, 300000);
let status = 0;
try {
  await main(tmp);
  console.log('page_test: all checks passed');
} catch (e) {
  console.log(`page_test: FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  status = 1;
} finally {
  await Promise.race([closeBrowser().catch(() => {}), new Promise((r) => setTimeout(r, 10000))]);
  killBrowser(); // in case close() did not end it
  fs.rmSync(tmp, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.exit(status);
