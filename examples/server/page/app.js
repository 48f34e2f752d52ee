// SPDX-License-Identifier: Apache-2.0
// vitmae-server's page: lists the models (GET /v1/models), then sends the chosen image's bytes as
// they are to POST /v1/reconstruct, /v1/classify and /v1/embeddings. document.body.dataset.state
// is "busy" while a request is in flight or waiting to be sent, then "done" (or "error", with the
// message in #status); "ready" before an image is chosen.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = 'vitmae-server-api-key';
const DEBOUNCE_MS = 300;
const ROUTES = { reconstruct: '/v1/reconstruct', classify: '/v1/classify', embeddings: '/v1/embeddings' };

let models = [];
let image = null; // { bytes: ArrayBuffer, type, name }
let pending = 0; // requests in flight or scheduled
const errors = new Map(); // task -> message of its latest request, while it failed
const latest = {}; // task -> number of its latest request: older answers are dropped
const timers = {};

function settle() {
  const body = document.body;
  if (pending > 0) {
    body.dataset.state = 'busy';
    if (!$('auth').hidden) setStatus('Waiting for the API key…');
    else setStatus('Working…');
  } else if (errors.size > 0) {
    body.dataset.state = 'error';
    setStatus([...errors].map(([task, message]) => `${task}: ${message}`).join('; '), true);
  } else if (models.length === 0) {
    body.dataset.state = 'error';
    setStatus('This server serves no model.', true);
  } else {
    body.dataset.state = image ? 'done' : 'ready';
    setStatus(image ? `Done: ${image.name}` : 'Choose an image to start.');
  }
}

function setStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

// Runs fn(current) as the latest request of task; current() tells whether it still is.
async function run(task, fn) {
  const n = (latest[task] = (latest[task] || 0) + 1);
  const current = () => latest[task] === n;
  pending++;
  settle();
  try {
    await fn(current);
    if (current()) errors.delete(task);
  } catch (e) {
    if (current()) errors.set(task, e.message || String(e));
  } finally {
    pending--;
    settle();
  }
}

function schedule(task, fn) {
  if (timers[task]) clearTimeout(timers[task]);
  else pending++;
  settle();
  timers[task] = setTimeout(() => {
    delete timers[task];
    fn();
    pending--;
    settle();
  }, DEBOUNCE_MS);
}

// The API key form: one prompt shared by every request that got a 401 meanwhile.
let keyPrompt = null;
function askKey(message) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const form = $('auth');
    $('auth-message').textContent = message;
    $('api-key').value = '';
    form.hidden = false;
    settle();
    $('api-key').focus();
    form.onsubmit = (event) => {
      event.preventDefault();
      const key = $('api-key').value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORAGE, key);
      form.hidden = true;
      keyPrompt = null;
      resolve();
    };
  });
  return keyPrompt;
}

async function errorText(res) {
  const text = await res.text();
  let message = text.trim();
  try {
    message = JSON.parse(text).error || message;
  } catch (_) { /* not JSON: keep the text */ }
  return `HTTP ${res.status}: ${message || res.statusText}`;
}

// fetch with the API key, asking for the key on a 401 and trying again; throws on other errors.
async function api(method, path, params, bytes, type) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = {};
    if (key) headers.Authorization = `Bearer ${key}`;
    if (bytes) headers['Content-Type'] = type;
    const res = await fetch(url, { method, headers, body: bytes });
    if (res.status !== 401) {
      if (!res.ok) throw new Error(await errorText(res));
      return res;
    }
    const message = await errorText(res);
    if (sessionStorage.getItem(KEY_STORAGE) !== key) continue; // a new key came meanwhile
    await askKey(key ? `The key was refused (${message}).` : `(${message})`);
  }
}

function fillModels(task) {
  const serving = models.filter((m) => (m.routes || []).includes(ROUTES[task]));
  $(`${task}-section`).hidden = serving.length === 0;
  const options = serving.map((m) => new Option(`${m.name} (${m.kind}, ${m.image_size}px)`, m.name));
  $(`${task}-model`).replaceChildren(...options);
}

function selectedModel(task) {
  return models.find((m) => m.name === $(`${task}-model`).value);
}

function setMaskRatio(ratio) {
  const slider = $('mask-ratio');
  slider.value = ratio > 0 && ratio < 1 ? String(ratio) : '0.75';
  $('mask-ratio-value').textContent = slider.value;
}

function format(x) {
  return typeof x === 'number' ? x.toPrecision(4) : '–';
}

function reconstruct() {
  if (!image || $('reconstruct-section').hidden) return;
  const seed = $('seed').valueAsNumber;
  if (!Number.isInteger(seed) || seed < 0) {
    errors.set('reconstruct', 'the seed must be a whole number, 0 or more');
    return settle();
  }
  const params = { model: $('reconstruct-model').value, mask_ratio: $('mask-ratio').value, seed, format: 'json' };
  run('reconstruct', async (current) => {
    const res = await api('POST', ROUTES.reconstruct, params, image.bytes, image.type);
    const r = await res.json();
    if (!current()) return;
    $('panel').src = `data:image/png;base64,${r.panel_png}`;
    $('result').hidden = false;
    $('loss').textContent = format(r.loss);
    $('mean-fill-loss').textContent = format(r.mean_fill_loss);
  });
}

function classify() {
  if (!image || $('classify-section').hidden) return;
  const params = { model: $('classify-model').value, top_k: 5 };
  run('classify', async (current) => {
    const res = await api('POST', ROUTES.classify, params, image.bytes, image.type);
    const r = await res.json();
    if (!current()) return;
    const items = r.data[0].top.map((t) => {
      const li = document.createElement('li');
      li.className = 'label';
      li.dataset.index = String(t.index);
      li.dataset.label = t.label;
      li.dataset.prob = String(t.prob);
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = t.label;
      const bar = document.createElement('span');
      bar.className = 'bar';
      const fill = document.createElement('span');
      fill.style.width = `${Math.max(0, Math.min(1, t.prob)) * 100}%`;
      bar.append(fill);
      const prob = document.createElement('span');
      prob.className = 'prob';
      prob.textContent = `${(t.prob * 100).toFixed(1)}%`;
      li.append(name, bar, prob);
      return li;
    });
    $('labels').replaceChildren(...items);
  });
}

function downloadEmbedding() {
  if (!image) return;
  const params = { model: $('embeddings-model').value, pooling: $('pooling').value };
  run('embeddings', async () => {
    const res = await api('POST', ROUTES.embeddings, params, image.bytes, image.type);
    const blob = new Blob([await res.text()], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = 'embedding.json';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
}

async function useFile(file) {
  if (!file) return;
  pending++;
  settle();
  try {
    image = { bytes: await file.arrayBuffer(), type: file.type || 'application/octet-stream', name: file.name };
    const preview = $('preview');
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    $('drop-text').textContent = `${file.name}: drop or click for another image`;
    $('download-embedding').disabled = false;
    $('result').hidden = true; // the last image's results go
    $('panel').removeAttribute('src');
    $('labels').replaceChildren();
    reconstruct();
    classify();
  } finally {
    pending--;
    settle();
  }
}

function wire() {
  const drop = $('drop');
  $('file').addEventListener('change', () => useFile($('file').files[0]));
  $('preview').addEventListener('error', () => ($('preview').hidden = true)); // a file the browser can't show
  for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());
  drop.addEventListener('dragover', () => drop.classList.add('over'));
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    drop.classList.remove('over');
    useFile(e.dataTransfer.files[0]);
  });
  $('mask-ratio').addEventListener('input', () => {
    $('mask-ratio-value').textContent = $('mask-ratio').value;
    schedule('reconstruct', reconstruct);
  });
  $('seed').addEventListener('input', () => schedule('reconstruct', reconstruct));
  $('reconstruct-model').addEventListener('change', () => {
    setMaskRatio(selectedModel('reconstruct')?.mask_ratio);
    reconstruct();
  });
  $('classify-model').addEventListener('change', classify);
  $('download-embedding').addEventListener('click', downloadEmbedding);
}

async function start() {
  wire();
  await run('models', async () => {
    const res = await api('GET', '/v1/models');
    models = (await res.json()).models || [];
    for (const task of Object.keys(ROUTES)) fillModels(task);
    setMaskRatio(selectedModel('reconstruct')?.mask_ratio);
  });
  if (image) {
    reconstruct();
    classify();
  }
}

start();
