// The page of `sd-wgpu serve`. It talks only to the native API: /api/info,
// /api/tokenize, /api/jobs (POST, DELETE, /events) and /outputs/. No build
// step and no third-party code: the binary serves this file as written.
// URLs are relative (the server's /outputs/ ones made so too), so the page
// also works behind a proxy's path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "sd-wgpu-api-key";
// The request fields that have an input (and an error line `err-<field>`).
const NUMBER_FIELDS = ["steps", "cfg_scale", "width", "height", "batch", "seed"];

const state = {
  concepts: [], // [{trigger, vectors}] from /api/info
  initImage: null, // data URL of the img2img input
  job: null, // {id, abort: AbortController} while a job runs
  lastSeed: null,
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, field, message) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

// Every request carries the key when the user gave one. EventSource cannot
// send headers, so the progress stream is read with fetch as well.
function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(res) {
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's page, say): its text is the message.
  }
  const e = body && body.error;
  if (res.status === 401) askForKey(sessionStorage.getItem(KEY_STORAGE) !== null);
  return new ApiError(res.status, e?.field ?? null, e?.message ?? (text || res.statusText));
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await errorOf(res);
  return res.status === 204 ? null : res.json();
}

// Reads a server-sent-events stream, calling onEvent(name, data) per event.
async function streamEvents(path, onEvent, signal) {
  const res = await fetch(path, { headers: authHeaders({ Accept: "text/event-stream" }), signal });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let name = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    for (;;) {
      const nl = buf.search(/[\r\n]/);
      // A "\r" at the end may be half of a "\r\n" still on its way.
      if (nl < 0 || (buf[nl] === "\r" && nl === buf.length - 1)) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(buf.startsWith("\r\n", nl) ? nl + 2 : nl + 1);
      if (line === "") {
        if (data.length) onEvent(name, data.join("\n"));
        name = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const key = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (key === "event") name = val;
        else if (key === "data") data.push(val);
      }
    }
  }
}

// ---------------------------------------------------------------- errors

function clearErrors() {
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  $("err-top").hidden = true;
}

// Next to the field at fault when the page has it, at the top otherwise.
function showError(err) {
  const field = err.field ? String(err.field).split(/[.[]/)[0] : null;
  const line = field && $(`err-${field}`);
  if (line) {
    line.textContent = err.message;
    const input = $(field);
    if (input) input.setAttribute("aria-invalid", "true");
    line.scrollIntoView({ block: "nearest" });
    return;
  }
  const top = $("err-top");
  top.textContent = field ? `${err.field}: ${err.message}` : err.message;
  top.hidden = false;
}

// ---------------------------------------------------------------- API key

function askForKey(refused) {
  const form = $("auth");
  form.hidden = false;
  $("err-api-key").textContent = refused ? "The server refused this key." : "";
  $("api-key").focus();
}

$("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("auth").hidden = true;
  loadInfo();
});

// ---------------------------------------------------------------- model info

async function loadInfo() {
  let info;
  try {
    info = await api("GET", "api/info");
  } catch (e) {
    if (e.status !== 401) showError(e);
    return;
  }
  $("model").textContent = info.hash ? `${info.model} [${info.hash.slice(0, 10)}]` : info.model;
  const sampler = $("sampler");
  sampler.replaceChildren(
    ...info.samplers.map((s) => {
      // A1111's name where it has one: what users of other front ends know.
      const opt = new Option(s.a1111_name || s.name, s.name);
      opt.title = [s.name, s.description].filter(Boolean).join(": ");
      return opt;
    }),
  );
  const d = info.defaults ?? {};
  for (const f of ["steps", "cfg_scale", "width", "height", "sampler"]) {
    if (d[f] !== undefined && d[f] !== null) $(f).value = d[f];
  }
  const limits = info.limits ?? {};
  if (limits.max_steps) $("steps").max = limits.max_steps;
  if (limits.max_batch) $("batch").max = limits.max_batch;
  state.concepts = info.concepts ?? [];
  showConcepts();
  countTokens("prompt");
  countTokens("negative_prompt");
}

function showConcepts() {
  $("concepts-field").hidden = state.concepts.length === 0;
  $("concepts").replaceChildren(
    ...state.concepts.map((c) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.trigger = c.trigger;
      b.title = `Insert ${c.trigger} into the prompt`;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${c.vectors} vector${c.vectors === 1 ? "" : "s"}`;
      b.append(c.trigger, count);
      b.addEventListener("click", () => insertTrigger(c.trigger));
      return b;
    }),
  );
}

// Inserts the trigger at the cursor as a word of its own.
function insertTrigger(trigger) {
  const el = $("prompt");
  const before = el.value.slice(0, el.selectionStart);
  const after = el.value.slice(el.selectionEnd);
  const lead = before && !/\s$/.test(before) ? " " : "";
  const trail = /^\s/.test(after) ? "" : " ";
  el.value = before + lead + trigger + trail + after;
  const cursor = (before + lead + trigger + trail).length;
  el.focus();
  el.setSelectionRange(cursor, cursor);
  el.dispatchEvent(new Event("input"));
}

// ---------------------------------------------------------------- token counter

const tokenTimers = {};
const tokenSeq = { prompt: 0, negative_prompt: 0 };

// A1111's counter: tokens used over the capacity of the 75-token chunks.
async function countTokens(field) {
  const seq = ++tokenSeq[field];
  const out = $(`${field}-tokens`);
  let res;
  try {
    res = await api("POST", "api/tokenize", { text: $(field).value });
  } catch (e) {
    out.textContent = "";
    if (e.status !== 401) out.title = `token count unavailable: ${e.message}`;
    return;
  }
  if (seq !== tokenSeq[field]) return; // a newer count is on its way
  out.textContent = `${res.tokens}/${res.capacity}`;
  out.classList.toggle("over", res.chunks.length > 1);
  out.title = res.chunks.map((c, i) => `chunk ${i + 1}: ${c.tokens_used}/${c.limit}`).join("\n");
}

for (const field of ["prompt", "negative_prompt"]) {
  $(field).addEventListener("input", () => {
    clearTimeout(tokenTimers[field]);
    tokenTimers[field] = setTimeout(() => countTokens(field), 250);
  });
}

// ---------------------------------------------------------------- form

for (const el of document.querySelectorAll("#gen input, #gen textarea, #gen select")) {
  el.addEventListener("input", () => {
    const line = $(`err-${el.name}`);
    if (line) line.textContent = "";
    el.removeAttribute("aria-invalid");
  });
}

$("seed-random").addEventListener("click", () => ($("seed").value = -1));
$("seed-reuse").addEventListener("click", () => ($("seed").value = state.lastSeed));
$("strength").addEventListener("input", () => ($("strength-value").value = $("strength").value));

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => ($("img2img").hidden = mode() !== "img2img"));
}

function useInitFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError({ field: "init_image", message: `${file.name} is not an image (${file.type || "unknown type"})` });
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.initImage = reader.result;
    $("init-preview").src = reader.result;
    $("init-preview").hidden = false;
    $("drop-text").textContent = file.name;
    $("err-init_image").textContent = "";
  };
  reader.readAsDataURL(file);
}

$("init-file").addEventListener("change", (ev) => useInitFile(ev.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (ev) => {
  ev.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  useInitFile(ev.dataTransfer.files[0]);
});

// The native request: the CLI's flags in snake_case. Empty inputs are left
// out so the server's defaults apply; `concepts` too, so the server uses the
// loaded concepts whose triggers the prompts contain.
function jobRequest() {
  const req = { prompt: $("prompt").value, negative_prompt: $("negative_prompt").value };
  for (const f of NUMBER_FIELDS) {
    const v = $(f).value.trim();
    if (v !== "") req[f] = Number(v);
  }
  if ($("sampler").value) req.sampler = $("sampler").value;
  if (mode() === "img2img") {
    req.init_image = state.initImage;
    req.strength = Number($("strength").value);
  }
  return req;
}

$("gen").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (state.job) return;
  clearErrors();
  if (mode() === "img2img" && !state.initImage) {
    showError({ field: "init_image", message: "choose or drop an image for image to image" });
    return;
  }
  let job;
  try {
    job = await api("POST", "api/jobs", jobRequest());
  } catch (e) {
    showError(e);
    return;
  }
  follow(job.id);
});

$("cancel").addEventListener("click", async () => {
  if (!state.job) return;
  $("cancel").disabled = true;
  try {
    await api("DELETE", `api/jobs/${state.job.id}`);
  } catch (e) {
    showError(e);
  }
});

// ---------------------------------------------------------------- a running job

function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

function progressText(text) {
  $("progress-text").textContent = text;
}

function seconds(s) {
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

// Follows a job's event stream until it ends, then shows its outcome.
async function follow(id) {
  state.job = { id, abort: new AbortController() };
  setBusy(true);
  $("progress").value = 0;
  progressText("Queued");
  const started = performance.now();
  let final = null;
  const onEvent = (name, raw) => {
    const ev = JSON.parse(raw);
    // `position`: how many queued jobs are ahead of this one.
    if (name === "queued") progressText(ev.position ? `Queued, ${ev.position} ahead` : "Queued, next");
    else if (name === "started") progressText("Starting");
    else if (name === "step") showStep(ev);
    else if (name === "image") addResult(id, ev);
    else if (["done", "failed", "cancelled"].includes(name)) final = { name, snapshot: ev };
  };
  try {
    await streamEvents(`api/jobs/${id}/events`, onEvent, state.job.abort.signal);
    // A stream cut short (a restart, a proxy) still ends with the job's state.
    if (!final) final = { name: "snapshot", snapshot: await api("GET", `api/jobs/${id}`) };
  } catch (e) {
    showError(e);
  }
  state.job = null;
  setBusy(false);
  $("preview").hidden = true;
  if (final) finish(id, final.name, final.snapshot, (performance.now() - started) / 1000);
}

function showStep(ev) {
  $("progress").value = ev.progress;
  const image = ev.images > 1 ? `image ${ev.image + 1}/${ev.images} · ` : "";
  const eta = ev.eta === null || ev.eta === undefined ? "" : ` · ETA ${seconds(ev.eta)}`;
  progressText(`${image}step ${ev.step}/${ev.steps}${eta}`);
  if (ev.preview) {
    $("preview").src = `data:image/png;base64,${ev.preview}`;
    $("preview").hidden = false;
  }
}

function finish(id, name, snap, elapsed) {
  const outcome = name === "snapshot" ? snap.state : name;
  if (outcome === "done") {
    $("progress").value = 1;
    progressText(`Done in ${seconds(elapsed)}`);
  } else if (outcome === "cancelled") {
    progressText("Cancelled");
  } else {
    progressText("Failed");
    if (snap.error) showError(snap.error);
  }
  for (const img of snap.results ?? []) addResult(id, img);
}

// A result card per image, once: the `image` event adds it, the final
// snapshot fills in its parameters.
function addResult(id, img) {
  const key = `${id}/${img.index}`;
  let card = document.querySelector(`.result[data-key="${key}"]`);
  if (!card) {
    card = $("result").content.firstElementChild.cloneNode(true);
    card.dataset.key = key;
    $("gallery").prepend(card);
    // /outputs/ needs no key (a job id is unguessable), so plain links do.
    const url = img.url.replace(/^\//, "");
    const el = card.querySelector("img");
    el.addEventListener("load", () => el.classList.toggle("small-image", el.naturalWidth < 256));
    el.src = url;
    card.querySelector("a.open").href = url;
    const download = card.querySelector("a.download");
    download.href = url;
    download.download = `sd-wgpu-${img.seed}.png`;
  }
  card.querySelector(".seed").textContent = `seed ${img.seed}`;
  if (img.parameters) card.querySelector(".infotext").textContent = img.parameters;
  state.lastSeed = img.seed;
  $("seed-used").textContent = `Last seed: ${img.seed}`;
  $("seed-reuse").disabled = false;
}

loadInfo();
