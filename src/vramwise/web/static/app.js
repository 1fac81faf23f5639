/* vramwise's page: a form built from the CLI's option table (GET /api/v1/options), the estimate live from the
   JSON API (the exact `--json` documents), the whole state in the address. No framework, no network beyond
   this server: every asset ships in the package. */
"use strict";

const API = "/api/v1";
const GIB = 2 ** 30;
const DEBOUNCE_MS = 250;
const UPLOADED_SOURCE = "config.json (uploaded)"; // web/api.py's name for a dropped config in its messages
const URL_CONFIG_MAX = 8000; // a dropped config.json rides in the address up to this many characters

// options the page does not show as fields: their own widgets (model, GPU, fit's question), or output switches
// that do not change the JSON document (the page always asks for the document)
const OWN_WIDGET = new Set(["model", "gpu", "max", "min_gpus", "best_format", "layouts"]);
const NOT_SHOWN = new Set(["json", "emit", "source", "explain", "units", "output", "help"]);

// the page's grouping of the option table (by dest); an option not named here lands in "Other options"
const GROUPS = {
  infer: [
    ["Common", true, ["engine", "batch", "context", "new_tokens", "format", "kv_dtype", "tp", "margin"]],
    ["Attention, prefill and images", false,
      ["attention", "kv_block", "prefill_chunk", "all_logits", "images", "image_size"]],
    ["vLLM", false, ["gpu_util", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enforce_eager",
      "kv_cache_memory", "pp", "vllm_version", "mxfp4_backend"]],
    ["SGLang", false, ["mem_fraction_static", "chunked_prefill_size", "cuda_graph_max_bs", "max_running_requests",
      "max_total_tokens", "context_length", "page_size", "disable_cuda_graph", "max_prefill_tokens",
      "sglang_version"]],
    ["llama.cpp and Ollama", false, ["ctx_size", "batch_size", "ubatch_size", "n_gpu_layers", "cache_type_k",
      "cache_type_v", "flash_attn", "parallel", "tensor_split", "split_mode", "no_mmap", "no_kv_offload",
      "kv_unified", "swa_full", "embeddings", "ollama"]],
    ["transformers with a device map", false, ["device_map", "max_memory"]],
    ["Overheads and mode", false, ["cuda_context", "cuda_version", "allocator_fraction", "mode"]],
    ["Other spellings", false, ["serve", "seq"]],
  ],
  train: [
    ["Common", true, ["batch", "seq", "grad_accum", "precision", "optimizer", "peft", "recompute", "framework",
      "margin"]],
    ["Fine-tuning (PEFT)", false, ["lora_r", "lora_targets", "lora_dropout", "freeze_layers", "num_virtual_tokens",
      "adapter_dtype", "double_quant"]],
    ["Precision, optimizer and kernels", false, ["grad_dtype", "optimizer_impl", "optimizer_in_backward", "float8",
      "attention", "mlp_impl", "norm_impl", "compile"]],
    ["Activations and loss", false, ["recompute_every", "activation_offload", "loss", "loss_chunk",
      "decoder_seq"]],
    ["Parallelism and sharding", false, ["dp", "zero", "fsdp", "fsdp_shard", "offload", "tp", "sp", "pp",
      "interleave", "cp", "ep", "fsdp_outer_units", "fsdp_over_cp", "per_stage"]],
    ["DeepSpeed and NCCL", false, ["reduce_bucket", "prefetch_bucket", "max_live_params",
      "param_persistence_threshold", "max_reuse_distance", "overlap_comm", "interconnect", "nccl_env"]],
    ["Loading, allocator and overheads", false, ["loading", "cuda_context", "cuda_version", "allocator_fraction",
      "expandable_segments", "max_split_size_mb", "allocator_replay"]],
    ["Textbook mode", false, ["mode", "seed", "lora_fraction"]],
  ],
};
const FIT_QUESTION_GROUP = ["Question", true, ["infer", "top", "max_batch", "margin"]];

// term colours by the first part of the name (weights/..., activations/..., kv_cache/...)
const PALETTE = {
  weights: "#3b6fb6", kv_cache: "#2e9e6a", activations: "#e08a2c", loss: "#c4572f", gradients: "#b8434f",
  optimizer: "#7a5bb5", overhead: "#8a8f98", cuda_graphs: "#5aa5b8", compute: "#d4a72c", loading: "#6c7a3b",
  zero: "#9c6ab0", fsdp: "#9c6ab0", ddp: "#a0785a", qlora: "#4f8f8f", dora: "#4f8f8f", float8: "#b08a5a",
  autocast: "#b08a5a", sglang: "#5a7fb0", model: "#3b6fb6", model_states: "#7a5bb5",
};
const FALLBACK_COLOURS = ["#6b8e23", "#cd853f", "#708090", "#b0607a", "#4682b4", "#9a8c3c"];

const $ = (id) => document.getElementById(id);
const state = {
  options: null, // {infer: [...], train: [...], fit: [...]}
  gpus: [],
  formats: [], // [{name, summary}] from GET /api/v1/formats
  byDest: {}, // cmd -> dest -> option
  config: null, // {name, text} of a dropped config.json
  extra: {}, // keys from the address the form has no field for: still sent, so the server names them
  remembered: {}, // the form's values across command switches
  gen: 0, // bumped on every form change; an answer for an older one is dropped
  running: false,
  lastDoc: null,
};

/* ---------- numbers ---------- */
function gib(bytes) {
  // the CLI's units.fmt: two decimals, thousands separated, GiB = 2^30 bytes
  return (bytes / GIB).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " GiB";
}
function int(n) { return Number(n).toLocaleString("en-US"); }
function count(n) {
  if (n === null || n === undefined) return "?";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " B";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  return int(n);
}

/* ---------- tiny DOM helpers ---------- */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/* ---------- the API ---------- */
async function getJSON(path) {
  const r = await fetch(API + path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
async function post(cmd, args, config) {
  const body = { args };
  if (config) body.config = config.text;
  let r;
  try {
    r = await fetch(`${API}/${cmd}`, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, error: { error: "the server did not answer (is `vramwise web` still running?)" } };
  }
  const text = await r.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch (e) { parsed = null; }
  if (r.ok && parsed) return { ok: true, doc: parsed, text };
  const error = parsed && parsed.error ? parsed : { error: `HTTP ${r.status}: ${text.slice(0, 200)}` };
  return { ok: false, status: r.status, error };
}

/* ---------- the form ---------- */
function currentCmd() { return document.querySelector('input[name="cmd"]:checked').value; }
const truthy = (v) => v === true || v === "true" || v === "1" || v === "";
// fit asks about an inference setup (--infer) or a training one: decided when the form is built, from its values
function fitInfer() { return currentCmd() === "fit" && state.fitInfer; }

function optionsShown(cmd) {
  const all = state.options[cmd] || [];
  if (cmd !== "fit") return all;
  // fit takes both setups: show the one asked (infer's with --infer, else train's) and fit's own
  const base = fitInfer() ? state.byDest.infer : state.byDest.train;
  return all.filter((o) => base[o.dest] || !state.byDest.infer[o.dest] && !state.byDest.train[o.dest]);
}

function groupsFor(cmd) {
  if (cmd !== "fit") return GROUPS[cmd];
  const base = fitInfer() ? GROUPS.infer : GROUPS.train;
  const q = new Set(FIT_QUESTION_GROUP[2]);
  return [FIT_QUESTION_GROUP, ...base.map(([t, open, dests]) => [t, open, dests.filter((d) => !q.has(d))])];
}

function fieldFor(rawOpt) {
  // fit --infer: the inference default of an option both setups take
  const opt = currentCmd() === "fit" && fitInfer() && "default_infer" in rawOpt ?
    Object.assign({}, rawOpt, { default: rawOpt.default_infer }) : rawOpt;
  const id = `opt-${opt.dest}`;
  const title = opt.help;
  const label = el("label", { for: id, title }, "--" + opt.flag);
  let input;
  if (opt.type === "bool") {
    input = el("input", { id, type: "checkbox", title, "data-dest": opt.dest, "data-flag": opt.flag });
    return el("div", { class: "field check", "data-field": opt.dest },
      el("label", { title }, input, " --" + opt.flag), el("div", { class: "error", "data-error-for": opt.dest }));
  }
  if (opt.choices && opt.choices.length) {
    input = el("select", { id, title, "data-dest": opt.dest, "data-flag": opt.flag });
    const dflt = opt.default !== null && opt.default !== undefined ? `default (${opt.default})` : "default";
    input.append(el("option", { value: "", "data-default": dflt }, dflt));
    for (const c of opt.choices) input.append(el("option", { value: String(c) }, String(c)));
  } else {
    const placeholder = opt.default !== null && opt.default !== undefined && opt.default !== "" ?
      String(Array.isArray(opt.default) ? opt.default.join(",") : opt.default) : "default";
    // --format: the weight formats the server lists (GET /api/v1/formats) as suggestions
    const list = opt.dest === "format" && state.formats.length ? "format-list" : null;
    input = el("input", { id, title, placeholder, list, "data-dest": opt.dest, "data-flag": opt.flag,
      "data-default": placeholder,
      inputmode: (opt.type === "int" && !opt.tokens) || opt.type === "float" ? "decimal" : null });
  }
  return el("div", { class: "field", "data-field": opt.dest }, label, input,
    el("div", { class: "error", "data-error-for": opt.dest }));
}

function buildForm(values) {
  const cmd = currentCmd();
  state.fitInfer = cmd === "fit" && state.byDest.fit && truthy(values[flagOf("fit", "infer")]);
  const shown = optionsShown(cmd).filter((o) => !OWN_WIDGET.has(o.dest) && !NOT_SHOWN.has(o.dest));
  const byDest = Object.fromEntries(shown.map((o) => [o.dest, o]));
  const placed = new Set();
  const root = $("groups");
  root.replaceChildren();
  const open = JSON.parse(sessionStorage.getItem("vramwise-open") || "{}");
  const addGroup = (title, isOpen, opts) => {
    if (!opts.length) return;
    const details = el("details", { class: "group", "data-group": title });
    details.open = title in open ? open[title] : isOpen;
    details.addEventListener("toggle", () => {
      const now = JSON.parse(sessionStorage.getItem("vramwise-open") || "{}");
      now[title] = details.open;
      sessionStorage.setItem("vramwise-open", JSON.stringify(now));
    });
    const given = opts.filter((o) => values[o.flag] !== undefined && values[o.flag] !== false).length;
    details.append(el("summary", {}, title, given ? el("span", { class: "badge" }, String(given)) : null));
    const grid = el("div", { class: "fields" });
    for (const o of opts) grid.append(fieldFor(o));
    details.append(grid);
    root.append(details);
  };
  for (const [title, isOpen, dests] of groupsFor(cmd)) {
    const opts = dests.filter((d) => byDest[d] && !placed.has(d)).map((d) => byDest[d]);
    opts.forEach((o) => placed.add(o.dest));
    addGroup(title, isOpen, opts);
  }
  addGroup("Other options", false, shown.filter((o) => !placed.has(o.dest)));
  // values back into the new fields
  for (const input of root.querySelectorAll("[data-flag]")) {
    const v = values[input.dataset.flag];
    if (v === undefined) continue;
    if (input.type === "checkbox") input.checked = truthy(v);
    else {
      // a value off the choice list (from an address) stays, so the server names what is wrong with it
      if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === String(v))) {
        input.append(el("option", { value: String(v) }, String(v)));
      }
      input.value = String(v);
    }
  }
  $("question").hidden = cmd !== "fit";
  if ($("option-filter").value) filterOptions();
  // fit's questions of the other kind of setup are off (largest context is inference's, fewest GPUs training's)
  const kind = $("question-kind");
  for (const o of kind.options) o.disabled = state.fitInfer ? o.dataset.for === "train" : o.dataset.for === "infer";
  if (kind.selectedOptions[0] && kind.selectedOptions[0].disabled) {
    kind.value = "max:batch";
    $("layouts-n").hidden = true;
  }
}

function gpuArg() {
  const name = $("gpu-name").value;
  let gpu = name === "__size" ? $("gpu-size").value.trim() : name;
  if (!gpu) return null;
  const n = parseInt($("gpu-count").value, 10);
  if (n > 1) gpu = `${n}x${gpu}`;
  return gpu;
}

function setGpu(text) {
  const sel = $("gpu-name");
  $("gpu-count").value = "1";
  $("gpu-size").hidden = true;
  if (!text) { sel.value = ""; return; }
  let name = String(text);
  const m = name.match(/^(\d+)\s*[xX×]\s*(.+)$/);
  if (m) { $("gpu-count").value = m[1]; name = m[2]; }
  const low = name.toLowerCase();
  const hit = state.gpus.find((g) => g.name === low || (g.aliases || []).includes(low));
  if (hit) { sel.value = hit.name; return; }
  sel.value = "__size";
  $("gpu-size").hidden = false;
  $("gpu-size").value = name;
}

// the API's args (flag -> value) from the form, in the option table's order
function readArgs() {
  const cmd = currentCmd();
  const args = {};
  const model = $("model").value.trim();
  if (model && !state.config) args.model = model;
  const gpu = gpuArg();
  if (gpu) args.gpu = gpu;
  if (cmd === "fit") {
    const q = $("question-kind").value;
    if (q.startsWith("max:")) args.max = q.slice(4);
    else if (q === "layouts") args.layouts = $("layouts-n").value.trim() || "8";
    else args[q] = true;
  }
  Object.assign(args, readFields());
  for (const [k, v] of Object.entries(state.extra)) if (!(k in args)) args[k] = v;
  return args;
}

// the option fields given (flag -> value): a switch on is true, an empty field is not given
function readFields() {
  const values = {};
  for (const input of $("groups").querySelectorAll("[data-flag]")) {
    if (input.type === "checkbox") { if (input.checked) values[input.dataset.flag] = true; }
    else if (input.value.trim() !== "") values[input.dataset.flag] = input.value.trim();
  }
  return values;
}

// options set by the address or an advice that have no field in this form: shown, and removable
function showExtras() {
  const box = $("extras");
  box.replaceChildren();
  for (const [k, v] of Object.entries(state.extra)) {
    box.append(el("span", { class: "chip", "data-error-field": k }, `--${k}${v === true ? "" : " " + v}`,
      el("button", { type: "button", class: "link", title: "remove", onclick: () => {
        delete state.extra[k];
        showExtras();
        changed();
      } }, "×")));
  }
  box.hidden = !box.childElementCount;
}

function flagOf(cmd, dest) {
  const o = state.byDest[cmd] && state.byDest[cmd][dest];
  return o ? o.flag : dest.replace(/_/g, "-");
}

/* ---------- the address and the command line ---------- */
function writeURL(cmd, args) {
  const q = new URLSearchParams();
  q.set("cmd", cmd);
  for (const [k, v] of Object.entries(args)) q.set(k, v === true ? "true" : String(v));
  if (state.config && state.config.text.length <= URL_CONFIG_MAX) {
    q.set("config", state.config.text);
    q.set("config-name", state.config.name);
  }
  history.replaceState(null, "", "?" + q.toString());
}

function shellQuote(s) {
  s = String(s);
  if (/^[A-Za-z0-9_.,:=@%+\/-]+$/.test(s)) return s;
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

function cliLine(cmd, args) {
  const parts = ["vramwise", cmd];
  if (state.config) parts.push(shellQuote(state.config.name || "config.json"));
  else if (args.model) parts.push(shellQuote(args.model));
  for (const [k, v] of Object.entries(args)) {
    if (k === "model") continue;
    if (v === true) parts.push("--" + k);
    else parts.push("--" + k, shellQuote(v));
  }
  parts.push("--json");
  return parts.join(" ");
}

/* ---------- errors ---------- */
function clearErrors() {
  for (const e of document.querySelectorAll(".error[data-error-for]")) { e.textContent = ""; }
  for (const f of document.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
  $("general-error").hidden = true;
}
function showError(err) {
  const field = err.field;
  let target = field ? document.querySelector(`.error[data-error-for="${CSS.escape(field)}"]`) : null;
  // a dropped config's own key (hidden_size, model_type) has no field here: its words go beside the drop zone
  if (!target && state.config && err.error.startsWith(UPLOADED_SOURCE)) {
    target = document.querySelector('.error[data-error-for="config"]');
  }
  const text = err.error; // the CLI's one line; what the field takes goes in the tooltip
  if (target) {
    target.textContent = text;
    target.title = err.allowed ? "allowed: " + err.allowed : "";
    target.dataset.message = err.error;
    const box = target.closest(".field");
    if (box) box.classList.add("invalid");
    const group = target.closest("details");
    if (group) group.open = true;
  }
  if (!target) {
    // an option from the address with no field: its chip is marked, with its × to drop it
    for (const chip of $("extras").querySelectorAll(".chip")) {
      const key = chip.dataset.errorField;
      chip.classList.toggle("invalid", key === field || err.error.includes(`'${key}'`));
    }
    $("general-error").textContent = text;
    $("general-error").dataset.message = err.error;
    $("general-error").hidden = false;
  }
  const where = target && target.dataset.errorFor === "config" ? "the dropped config" : `--${field}`;
  $("status").textContent = target ? `The server refused this setup (see ${where} on the left): ${err.error}` :
    "The server refused this setup; the numbers below, if any, are the last good estimate's.";
  $("status").className = "status bad";
  $("result").classList.add("stale");
}

/* ---------- the live loop: one request in flight, an answer for an older form dropped ---------- */
let timer = null;
function changed() {
  clearTimeout(timer);
  $("result").dataset.state = "pending"; // until the answer for this form is shown (the tests wait on it)
  timer = setTimeout(() => { timer = null; state.gen += 1; run(); }, DEBOUNCE_MS);
}

async function run() {
  if (state.running) return; // the loop in flight picks the new generation up
  state.running = true;
  try {
    for (;;) {
      const g = state.gen;
      const cmd = currentCmd();
      const args = readArgs();
      const config = state.config;
      writeURL(cmd, args);
      $("cli").textContent = cliLine(cmd, args);
      $("share-box").hidden = false;
      $("status").textContent = "Estimating…";
      $("status").className = "status busy";
      const answer = await post(cmd, args, config);
      if (g !== state.gen) continue; // stale: the form changed meanwhile
      clearErrors();
      if (!answer.ok) {
        showError(answer.error);
        setJSON(null);
      } else {
        render(cmd, args, answer);
        if (cmd !== "fit") await fitAnswers(g, cmd, args, config, answer.doc);
      }
      if (g === state.gen) break;
    }
  } finally {
    state.running = false;
    if (!timer) $("result").dataset.state = "idle";
  }
}

/* ---------- rendering ---------- */
function setJSON(answer) {
  const a = $("json-link"), v = $("json-view");
  if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
  // no document (a refusal): the links go, rather than stay as links that do nothing
  a.hidden = v.hidden = !answer;
  if (!answer) { a.removeAttribute("href"); v.removeAttribute("href"); a.dataset.url = ""; return; }
  const url = URL.createObjectURL(new Blob([answer.text], { type: "application/json" }));
  a.href = url; v.href = url; a.dataset.url = url;
  a.download = `vramwise-${currentCmd()}.json`;
}

function worstStage(doc) {
  if (!doc.stages) return doc;
  let worst = doc.stages[0];
  for (const s of doc.stages) if (s.peak.bytes > worst.peak.bytes) worst = s;
  return Object.assign({}, worst, { _stages: doc.stages, _stageNote: `pipeline stage ${doc.stages.indexOf(worst)} of ` +
    `${doc.stages.length}, the fullest (the JSON has every stage)` });
}

// a field left empty says the value in effect where it is not the CLI default: a --framework preset or a
// dropped config sets options the user did not give (the document's setup holds what the estimate ran with)
function showEffective(setup) {
  for (const input of $("groups").querySelectorAll("[data-dest]")) {
    const v = setup ? setup[input.dataset.dest] : undefined;
    const text = v === undefined || v === null ? null : Array.isArray(v) ? v.join(",") : String(v);
    const first = input.tagName === "SELECT" ? input.options[0] : null;
    const dflt = first ? first.dataset.default : input.dataset.default;
    if (dflt === undefined) continue; // a switch: its box is either ticked or not
    const plain = dflt.replace(/^default \((.*)\)$/, "$1");
    const differs = text !== null && text !== "" && text !== plain;
    const shownText = differs ? `${text} (in effect)` : dflt;
    if (first) first.textContent = shownText; else input.placeholder = shownText;
    input.classList.toggle("effective", differs);
  }
}

function render(cmd, args, answer) {
  state.lastDoc = answer.doc;
  setJSON(answer);
  // --per-stage answers {stages: [...]}: every stage ran with the same setup
  if (cmd !== "fit") showEffective(answer.doc.setup || (answer.doc.stages ? answer.doc.stages[0].setup : undefined));
  const hide = ["chart-box", "range-box", "engine-box", "advice-box", "phases-box", "terms-box", "notes-box", "fit-box"];
  hide.forEach((id) => { $(id).hidden = true; });
  if (cmd === "fit") renderFitDoc(answer.doc);
  else renderEstimate(worstStage(answer.doc));
  $("status").textContent = "";
  $("status").className = "status";
  $("result").classList.remove("stale");
}

function setVerdict(word, good, peakBytes, peakPhase, headroom, sub) {
  const box = $("verdict-box");
  box.hidden = false;
  box.className = "verdict " + (good === null ? "neutral" : good ? "good" : "bad");
  $("verdict").textContent = word;
  const peak = $("peak");
  peak.textContent = peakBytes === null || peakBytes === undefined ? "—" : gib(peakBytes);
  peak.dataset.bytes = peakBytes === null || peakBytes === undefined ? "" : String(peakBytes);
  $("peak-phase").textContent = peakPhase ? `at ${peakPhase}` : "";
  const h = $("headroom");
  h.textContent = headroom === null || headroom === undefined ? "—" : gib(headroom);
  h.dataset.bytes = headroom === null || headroom === undefined ? "" : String(headroom);
  h.parentElement.hidden = headroom === null || headroom === undefined;
  $("verdict-sub").replaceChildren(...sub);
  // the tab says the answer too (a link shared and opened among others)
  const model = $("model").value.trim() || (state.config ? state.config.name : "");
  document.title = `${word}${peakBytes !== null && peakBytes !== undefined ? " " + gib(peakBytes) : ""} · ${model}` +
    ` · vramwise`;
}

function gpuLine(gpu) {
  if (!gpu) return "no GPU given: the peak per GPU only";
  const n = gpu.count && gpu.count > 1 ? `${gpu.count} × ` : "";
  let s = `${n}${gpu.label}: ${gib(gpu.memory_bytes)} visible to CUDA`;
  if (gpu.smi_bytes) s += ` (nvidia-smi ${gib(gpu.smi_bytes)})`;
  if (gpu.margin) s += `; margin ${gpu.margin}: budget ${gib(gpu.budget_bytes)}`;
  if (gpu.confirmed === false) s += "; nominal total, not a published CUDA total";
  return s;
}

function renderEstimate(doc) {
  const gpu = doc.gpu;
  const m = doc.model;
  const what = `${doc.kind} of ${m.name} (${count(m.params)} parameters${m.active_params && m.active_params !==
    m.params ? `, ${count(m.active_params)} active` : ""})`;
  const sub = [el("div", {}, what + setupLine(doc)), el("div", {}, gpuLine(gpu))];
  if (gpu && gpu.reason) sub.push(el("div", { class: "bad-text" }, gpu.reason));
  if (doc._stageNote) sub.push(el("div", { class: "muted" }, doc._stageNote));
  if (gpu) setVerdict(gpu.fits ? "FITS" : "DOES NOT FIT", gpu.fits, doc.peak.bytes, doc.peak.phase,
    gpu.headroom_bytes, sub);
  else setVerdict("PEAK PER GPU", null, doc.peak.bytes, doc.peak.phase, null, sub);
  renderChart(doc);
  renderRange(doc);
  renderEngine(doc);
  renderAdvice(doc.advice, doc.gpu);
  renderPhases(doc);
  if (doc._stages) renderStages(doc._stages, gpu);
  renderTerms(doc);
  renderNotes([...(doc.missing || []).map((s) => "not computed: " + s), ...(doc.notes || [])]);
}

// the setup in a few words, as the CLI's first line says it
function setupLine(doc) {
  const u = doc.setup || {};
  if (doc.kind === "training") {
    const peft = u.peft && u.peft !== "none" ? `, ${u.peft}${String(u.peft).includes("lora") ? " r=" + u.lora_r : ""}` :
      ", full fine-tuning";
    return `: micro-batch ${u.batch} × ${int(u.seq)} tokens, ${u.precision}, ${u.optimizer}${peft}, ` +
      `recompute ${u.recompute}`;
  }
  const engine = u.engine && u.engine !== "hf" ? `${u.engine}, ` : "";
  return `: ${engine}batch ${u.batch} × ${int(u.context)} tokens${u.new_tokens ? ` + ${int(u.new_tokens)} new` : ""}` +
    `, weights ${u.weight_format || "as stored"}`;
}

function baseColour(head, extraColours) {
  if (PALETTE[head]) return PALETTE[head];
  if (!extraColours[head]) {
    extraColours[head] = FALLBACK_COLOURS[Object.keys(extraColours).length % FALLBACK_COLOURS.length];
  }
  return extraColours[head];
}

// lighter and darker: the terms of one kind side by side stay apart in the bar
const SHADES = [0, 0.28, -0.22, 0.5, -0.38, 0.14, 0.62, -0.1];
function shade(hex, f) {
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const out = rgb.map((c) => Math.round(f >= 0 ? c + (255 - c) * f : c * (1 + f)));
  return "#" + out.map((c) => c.toString(16).padStart(2, "0")).join("");
}

// every term's colour: its kind's (the name's first part), shaded by its place among that kind's terms
function termColours(terms) {
  const extra = {}, seen = {}, colours = new Map();
  for (const t of terms) {
    const head = t.name.split("/")[0];
    const k = seen[head] || 0;
    seen[head] = k + 1;
    colours.set(t.name, shade(baseColour(head, extra), SHADES[k % SHADES.length]));
  }
  return colours;
}

function niceStep(maxGiB) {
  const raw = maxGiB / 6;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function renderChart(doc) {
  const terms = (doc.terms || []).filter((t) => t.bytes > 0);
  const gpu = doc.gpu;
  const capacity = gpu ? gpu.memory_bytes : null;
  const budget = gpu && gpu.budget_bytes && gpu.budget_bytes !== gpu.memory_bytes ? gpu.budget_bytes : null;
  const total = doc.peak.bytes;
  const top = Math.max(total, capacity || 0) * 1.04 || GIB;
  const W = 760, H = 140, x0 = 8, x1 = W - 12, barY = 34, barH = 40;
  const sx = (b) => x0 + (b / top) * (x1 - x0);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", class: "bar",
    "aria-label": `memory by term: peak ${gib(total)}` + (capacity ? ` against ${gib(capacity)}` : "") });
  const colours = termColours(doc.terms || []);
  const groups = new Map();
  let acc = 0;
  for (const t of terms) {
    const colour = colours.get(t.name);
    const w = Math.max(sx(acc + t.bytes) - sx(acc), 0);
    const rect = svg("rect", { x: sx(acc).toFixed(2), y: barY, width: w.toFixed(2), height: barH, fill: colour,
      class: "seg", "data-term": t.name }, svg("title", {}, `${t.name}: ${gib(t.bytes)} (${int(t.bytes)} B)`));
    chart.append(rect);
    if (w > 70) {
      chart.append(svg("text", { x: (sx(acc) + w / 2).toFixed(2), y: barY + barH / 2 + 4, class: "seg-label",
        "text-anchor": "middle" }, shorten(t.name, Math.floor(w / 6.5))));
    }
    const head = t.name.split("/")[0];
    const g = groups.get(head) || { colour, bytes: 0 }; // a kind's first term has its unshaded colour
    g.bytes += t.bytes;
    groups.set(head, g);
    acc += t.bytes;
  }
  // the axis in GiB
  const step = niceStep(top / GIB);
  for (let v = 0; v * GIB <= top; v += step) {
    const x = sx(v * GIB);
    chart.append(svg("line", { x1: x, x2: x, y1: barY + barH, y2: barY + barH + 5, class: "tick" }));
    chart.append(svg("text", { x, y: barY + barH + 18, class: "axis", "text-anchor": "middle" },
      `${Number(v.toFixed(2))}`));
  }
  chart.append(svg("text", { x: x1, y: H - 4, class: "axis", "text-anchor": "end" }, "GiB (2^30 bytes)"));
  if (capacity) {
    // the room left (or the overshoot) between the peak and the budget, as a band behind the line
    const limit = budget || capacity;
    const [a, b] = total <= limit ? [total, limit] : [limit, total];
    const band = svg("rect", { x: sx(a).toFixed(2), y: barY, width: Math.max(sx(b) - sx(a), 0).toFixed(2),
      height: barH, class: total <= limit ? "room" : "over" },
    svg("title", {}, total <= limit ? `headroom ${gib(limit - total)}` : `over the budget by ${gib(total - limit)}`));
    chart.insertBefore(band, chart.firstChild);
    if (total <= limit && sx(b) - sx(a) > 110) {
      chart.append(svg("text", { x: ((sx(a) + sx(b)) / 2).toFixed(2), y: barY + barH / 2 + 4, "text-anchor": "middle",
        class: "room-label" }, `headroom ${gib(limit - total)}`));
    } else if (total > limit) { // under the axis: the bar's own labels stay readable
      const mid = Math.min((sx(a) + sx(b)) / 2, x1 - 70); // kept inside the drawing at the right edge
      chart.append(svg("text", { x: mid.toFixed(2), y: barY + barH + 34, "text-anchor": "middle",
        class: "over-label" }, `over by ${gib(total - limit)}`));
    }
    const x = sx(capacity);
    chart.append(svg("line", { x1: x, x2: x, y1: 16, y2: barY + barH + 8, class: "capacity" }));
    const fitsLeft = x > W * 0.75;
    chart.append(svg("text", { x: fitsLeft ? x - 4 : x + 4, y: 14, class: "capacity-label",
      "text-anchor": fitsLeft ? "end" : "start" }, `${gpu.label.replace(/^NVIDIA /, "")}: ${gib(capacity)}`));
  }
  if (budget) {
    const x = sx(budget);
    chart.append(svg("line", { x1: x, x2: x, y1: barY - 4, y2: barY + barH + 4, class: "budget" },
      svg("title", {}, `budget after the margin: ${gib(budget)}`)));
  }
  // last, over the capacity line (with a halo, style.css): a peak just past the capacity put the dashed line
  // through its digits
  chart.append(svg("text", { x: Math.min(sx(total), x1 - 2), y: barY - 8, class: "peak-label",
    "text-anchor": sx(total) > W / 2 ? "end" : "start" }, `peak ${gib(total)}`));
  $("chart").replaceChildren(chart);
  const legend = $("legend");
  legend.replaceChildren();
  for (const [head, g] of groups) {
    legend.append(el("span", { class: "key" }, el("span", { class: "swatch", style: `background:${g.colour}` }),
      `${head} ${gib(g.bytes)}`));
  }
  $("chart-box").hidden = false;
}

function shorten(s, n) { return s.length <= n ? s : s.slice(0, Math.max(n - 1, 1)) + "…"; }

// --range (issue 15): the low, the estimate, the high and the bound, and each uncertainty's two ends, as the CLI's
// "range:" lines say them
function renderRange(doc) {
  const r = doc.range;
  const box = $("range");
  box.replaceChildren();
  if (!r) return;
  const gpu = doc.gpu;
  const line = el("p", { "data-testid": "range", "data-low": String(r.low), "data-high": String(r.high),
    "data-bound": String(r.bound) },
  `${r.at ? `at ${r.at}: ` : ""}low ${gib(r.low)}, estimate ${gib(r.estimate)}, high ${gib(r.high)}, ` +
  `bound ${gib(r.bound)}`);
  if (gpu) { // fit's document has the budget (the capacity less --margin), an estimate's the capacity
    const room = (gpu.budget_bytes !== undefined ? gpu.budget_bytes : gpu.memory_bytes) - r.high;
    line.append(el("span", { class: r.high_fits ? "good-text" : "bad-text" },
      `; the high: ${r.high_fits ? "FITS" : "DOES NOT FIT"}, headroom ${gib(room)}`));
  }
  const tb = el("tbody");
  for (const u of r.uncertainties || []) {
    tb.append(el("tr", {}, el("td", {}, u.name), el("td", { class: "num" }, gib(u.low_bytes)),
      el("td", { class: "num" }, gib(u.high_bytes)), el("td", {}, `${u.low} .. ${u.high}`),
      el("td", { class: "muted" }, u.source || "")));
  }
  box.append(line, el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", {}, "uncertainty"),
    el("th", { class: "num" }, "low"), el("th", { class: "num" }, "high"), el("th", {}, "from .. to"),
    el("th", {}, "source"))), tb));
  for (const n of r.notes || []) box.append(el("p", { class: "muted" }, n));
  $("range-box").hidden = false;
}

function renderPhases(doc) {
  const phases = doc.phases || [];
  if (!phases.length) return;
  const cap = doc.gpu ? (doc.gpu.budget_bytes || doc.gpu.memory_bytes) : null;
  const top = Math.max(...phases.map((p) => p.bytes), cap || 0) || 1;
  const box = $("phases");
  box.replaceChildren();
  for (const p of phases) {
    const isPeak = p.name === doc.peak.phase;
    const over = cap !== null && p.bytes > cap;
    box.append(el("div", { class: "phase" + (isPeak ? " peak" : ""), "data-phase": p.name },
      el("span", { class: "phase-name" }, p.name + (isPeak ? "  ← peak" : "")),
      el("span", { class: "phase-bar" }, el("span", { class: "phase-fill" + (over ? " over" : ""),
        style: `width:${(100 * p.bytes / top).toFixed(1)}%` }),
      cap ? el("span", { class: "phase-cap", style: `left:${(100 * cap / top).toFixed(1)}%`,
        title: `capacity ${gib(cap)}` }) : null),
      el("span", { class: "num" }, gib(p.bytes))));
  }
  $("phases-box").hidden = false;
}

// train --per-stage: each pipeline stage's peak (the table and the bar are the fullest stage's)
function renderStages(stages, gpu) {
  const tb = el("tbody");
  stages.forEach((st, i) => {
    tb.append(el("tr", {}, el("td", {}, `stage ${i}`), el("td", { class: "num" }, gib(st.peak.bytes)),
      el("td", {}, st.peak.phase || ""), el("td", { class: "num" }, st.gpu ? gib(st.gpu.headroom_bytes) : "")));
  });
  $("phases").append(el("h3", {}, "Pipeline stages"), el("table", { class: "grid" }, el("thead", {}, el("tr", {},
    el("th", {}, "stage"), el("th", { class: "num" }, "peak"), el("th", {}, "at"),
    el("th", { class: "num" }, gpu ? "headroom" : ""))), tb));
  $("phases-box").hidden = false;
}

function renderTerms(doc) {
  const body = $("terms");
  body.replaceChildren();
  const colours = termColours(doc.terms || []);
  for (const t of doc.terms || []) {
    body.append(el("tr", { "data-term": t.name },
      el("td", { class: "name" }, el("span", { class: "swatch", style: `background:${colours.get(t.name)}` }),
        t.name),
      el("td", { class: "num", "data-testid": "term-bytes", "data-term": t.name, "data-bytes": String(t.bytes) },
        gib(t.bytes)),
      el("td", { class: "num muted" }, int(t.bytes)),
      el("td", { class: "formula" }, t.formula || ""),
      el("td", { class: "source" }, sourceNode(t.source))));
  }
  $("terms-total").replaceChildren(el("tr", {}, el("td", {}, "total (peak)"),
    el("td", { class: "num" }, gib(doc.peak.bytes)), el("td", { class: "num muted" }, int(doc.peak.bytes)),
    el("td", { colspan: "2", class: "muted" }, doc.peak.phase ? `at ${doc.peak.phase}` : "")));
  const host = $("host");
  host.replaceChildren();
  if (doc.host && doc.host.length) {
    host.append(el("h3", {}, "Host RAM per GPU process (not in the peak)"));
    const tb = el("tbody");
    for (const t of doc.host) {
      tb.append(el("tr", {}, el("td", {}, t.name), el("td", { class: "num" }, gib(t.bytes)),
        el("td", { class: "formula" }, t.formula || ""), el("td", { class: "source" }, sourceNode(t.source))));
    }
    host.append(el("table", { class: "grid" }, tb));
  }
  $("terms-box").hidden = false;
}

function sourceNode(source) {
  if (!source) return "";
  const m = String(source).match(/https?:\/\/\S+/);
  if (!m) return String(source);
  // a link the reader may follow; the page itself never requests it
  return el("span", {}, source.slice(0, m.index),
    el("a", { href: m[0], target: "_blank", rel: "noopener noreferrer" }, m[0]), source.slice(m.index + m[0].length));
}

function renderEngine(doc) {
  const e = doc.engine;
  const c = doc.capacity;
  if (!e && !c) return;
  const dl = $("engine");
  dl.replaceChildren();
  const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {}, k), el("dd", {}, v)); };
  if (e) {
    $("engine-title").textContent = `Engine plan: ${e.name} ${e.version || ""}`;
    add("refusal", e.refusal ? `${e.refusal}: ${e.refusal_message || ""}` : null);
    add("budget", e.budget !== null && e.budget !== undefined ? gib(e.budget) : null);
    add("KV pool", e.kv_pool_bytes !== undefined && e.kv_pool_bytes !== null ? gib(e.kv_pool_bytes) : null);
    add("KV tokens", e.kv_tokens !== undefined && e.kv_tokens !== null ? int(e.kv_tokens) : null);
    add("context length", e.context_len ? int(e.context_len) : null);
    add("concurrency at that length", e.concurrency ? e.concurrency.toFixed(2) + "×" : null);
    add("sequences of " + (e.sequence_tokens ? int(e.sequence_tokens) + " tokens" : "the setup"),
      e.max_sequences !== undefined && e.max_sequences !== null ? int(e.max_sequences) : null);
    add("longest context that fits one request", e.max_model_len_fit ? int(e.max_model_len_fit) : null);
    if (e.per_gpu_peak_bytes) add("per GPU peak", e.per_gpu_peak_bytes.map(gib).join(", "));
  } else {
    $("engine-title").textContent = "Serving capacity";
  }
  if (c) {
    add("KV bytes per token", int(c.kv_bytes_per_token));
    add("KV budget", c.kv_budget_formula);
  }
  $("engine-box").hidden = false;
}

function renderAdvice(advice, gpu, into) {
  const body = into || $("advice");
  body.replaceChildren();
  if (!advice) return;
  if (!advice.length) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "No single change makes it fit.")));
  }
  for (const a of advice) {
    body.append(el("tr", { "data-kind": a.kind },
      el("td", {}, el("code", {}, a.change)),
      el("td", { class: "num" }, gib(a.peak_bytes)),
      el("td", { class: "num " + (a.headroom_bytes >= 0 ? "good-text" : "bad-text") }, gib(a.headroom_bytes)),
      el("td", {}, a.gpu ? `${a.gpu}` : `${a.gpus || 1}`),
      el("td", { class: "muted" }, a.note || ""),
      el("td", {}, el("button", { type: "button", class: "small", onclick: () => applyAdvice(a),
        title: "set these options in the form" }, "apply"))));
  }
  if (!into) $("advice-box").hidden = false;
}

function applyAdvice(a) {
  const cmd = currentCmd() === "fit" ? (fitInfer() ? "infer" : "train") : currentCmd();
  for (const [dest, value] of Object.entries(a.options || {})) {
    const input = $("groups").querySelector(`[data-dest="${CSS.escape(dest)}"]`);
    if (input) {
      if (input.type === "checkbox") input.checked = !!value;
      else input.value = Array.isArray(value) ? value.join(",") : String(value);
      const group = input.closest("details");
      if (group) group.open = true;
    } else {
      state.extra[flagOf(cmd, dest)] = value === true ? true : String(value);
    }
  }
  showExtras();
  if (a.gpu) setGpu(a.gpu);
  changed();
}

function renderNotes(notes) {
  const ul = $("notes");
  ul.replaceChildren(...notes.map((n) => el("li", {}, n)));
  $("notes-box").hidden = !notes.length;
}

/* ---------- fit ---------- */
function fitValue(ans) {
  if (!ans) return "—";
  return typeof ans.value === "number" ? int(ans.value) : String(ans.value);
}

function renderFitDoc(doc) {
  const a = doc.answer;
  const sub = [el("div", {}, `${doc.question.replace(/_/g, " ")} for ${doc.model}`), el("div", {}, gpuLine(doc.gpu))];
  if (doc.reason) sub.push(el("div", { class: "bad-text" }, doc.reason));
  if (a) {
    sub.unshift(el("div", { class: "answer" }, `${a.question}: `, el("strong", { "data-testid": "fit-value" },
      fitValue(a))));
    if (a.next_value !== null && a.next_value !== undefined) {
      sub.push(el("div", { class: "muted" }, `one step beyond, ${a.next_value}: ` +
        (a.next_peak_bytes ? gib(a.next_peak_bytes) : "not estimated") + (a.stopped_by ? ` (${a.stopped_by})` : "")));
    }
  }
  const best = doc.layouts && (doc.layouts.fitting || [])[0];
  if (best) sub.unshift(el("div", { class: "answer" }, "best layout: ", el("strong", { "data-testid": "fit-value" },
    best.label)));
  const peak = a ? a.peak_bytes : best ? best.peak : null;
  const room = a ? a.headroom_bytes : best ? doc.gpu.budget_bytes - best.peak : null;
  setVerdict(doc.fits ? "FITS" : "NOTHING FITS", doc.fits, peak, a ? a.peak_phase : best ? "the best layout" : null,
    room, sub);
  const box = $("fit");
  box.replaceChildren();
  renderRange(doc);  // fit --max --range: the range at the answer
  if (doc.formats) box.append(formatsTable(doc.formats));
  if (doc.layouts) box.append(layoutsTable(doc.layouts));
  if (doc.advice) {
    const tb = el("tbody");
    renderAdvice(doc.advice, doc.gpu, tb);
    box.append(el("h3", {}, doc.question === "min_gpus" ? "Changes that need fewer GPUs" : "What would make it fit"),
      el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ...["change", "peak", "headroom", "GPUs", "note", ""]
        .map((h) => el("th", { class: h === "peak" || h === "headroom" ? "num" : null }, h)))), tb));
  }
  $("fit-title").textContent = "Answer";
  $("fit-box").hidden = !box.childElementCount;
  const assumed = doc.assumptions && doc.assumptions.length ? ["assuming " + doc.assumptions.join("; ")] : [];
  renderNotes([...assumed, ...(doc.notes || [])]);
}

function formatsTable(formats) {
  const tb = el("tbody");
  for (const f of formats) {
    tb.append(el("tr", {}, el("td", {}, f.format), el("td", { class: "num" }, f.peak_bytes ? gib(f.peak_bytes) : "—"),
      el("td", { class: f.fits ? "good-text" : "bad-text" }, f.fits ? "fits" : "no"),
      el("td", { class: "num" }, f.kv_tokens ? int(f.kv_tokens) : ""),
      el("td", { class: "muted" }, f.refused || f.engine_refusal || "")));
  }
  return el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", {}, "format"),
    el("th", { class: "num" }, "peak"), el("th", {}, "fits"), el("th", { class: "num" }, "KV tokens"),
    el("th", {}, "refused"))), tb);
}

function layoutsTable(layouts, limit) {
  const tb = el("tbody");
  const rows = (layouts.fitting || []).slice(0, limit || 100);
  for (const l of rows) {
    tb.append(el("tr", {}, el("td", {}, l.label), el("td", { class: "num" }, gib(l.peak)),
      el("td", { class: "num" }, Number(l.throughput).toPrecision(3))));
  }
  if (!rows.length) tb.append(el("tr", {}, el("td", { colspan: "3", class: "muted" }, "no layout fits")));
  return el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", {}, "layout"),
    el("th", { class: "num" }, "peak"), el("th", { class: "num" }, "relative throughput"))), tb);
}

// the fit questions answered beside an infer or train estimate (fit needs --gpu)
function fitQuestions(cmd, args, count) {
  const fitDests = state.byDest.fit || {};
  const fitFlags = new Set(Object.values(fitDests).map((o) => o.flag));
  const base = {};
  for (const [k, v] of Object.entries(args)) if (k === "model" || fitFlags.has(k)) base[k] = v;
  const rangeFlag = flagOf("fit", "range");
  const without = (keys, extra) => {
    const a = Object.assign({}, base);
    for (const k of keys) delete a[k];
    // fit takes --range with --max only (app/ranges.py refuses it with the other questions): the page's own
    // questions then answer without it rather than show that refusal
    if (!("max" in extra)) delete a[rangeFlag];
    return Object.assign(a, extra);
  };
  const ctx = [flagOf("infer", "context"), flagOf("infer", "seq")];
  if (cmd === "infer") {
    base[flagOf("fit", "infer")] = true;
    return [
      ["largest batch", without([flagOf("fit", "batch")], { max: "batch" })],
      ["largest context", without(ctx, { max: "context" })],
      ["best weight format", without([flagOf("fit", "format")], { [flagOf("fit", "best_format")]: true })],
    ];
  }
  const n = count > 1 ? count : 8;
  return [
    ["largest micro-batch", without([flagOf("fit", "batch")], { max: "batch" })],
    ["largest sequence", without([flagOf("fit", "seq")], { max: "seq" })],
    // the searched quantities are left out: the number of GPUs (dp and --gpu's count), the layout's axes
    ["fewest GPUs", without([flagOf("fit", "dp")], { [flagOf("fit", "min_gpus")]: true,
      gpu: String(base.gpu).replace(/^\d+\s*x\s*/i, "") })],
    [`layouts of ${n} GPUs`, without(["dp", "tp", "pp", "zero", "recompute", "offload"].map((d) => flagOf("fit", d)),
      { [flagOf("fit", "layouts")]: String(n), top: "3" })],
  ];
}

async function fitAnswers(g, cmd, args, config, doc) {
  const box = $("fit");
  box.replaceChildren();
  if (!args.gpu || doc.stages) { $("fit-box").hidden = true; return; }
  $("fit-title").textContent = "Fit answers on this GPU";
  const tb = el("tbody");
  box.append(el("table", { class: "grid fit-table" }, el("thead", {}, el("tr", {}, el("th", {}, "question"),
    el("th", {}, "answer"), el("th", { class: "num" }, "peak"), el("th", { class: "num" }, "headroom"),
    el("th", {}, ""))), tb));
  $("fit-box").hidden = false;
  const count = doc.gpu && doc.gpu.count ? doc.gpu.count : 1;
  let lastError = null;
  for (const [label, fitArgs] of fitQuestions(cmd, args, count)) {
    const row = el("tr", { "data-question": label }, el("td", {}, label), el("td", { class: "muted" }, "…"));
    tb.append(row);
    const r = await post("fit", fitArgs, config);
    if (g !== state.gen) return;
    row.replaceChildren(el("td", {}, label));
    const cli = el("td", {}, el("button", { type: "button", class: "small link", title: cliLine("fit", fitArgs),
      onclick: () => openFit(fitArgs) }, "open"));
    if (!r.ok) {
      const same = r.error.error === lastError; // fit refusing the setup says so once
      row.append(el("td", { colspan: "3", class: "muted" }, same ? "(as above)" : r.error.error), cli);
      lastError = r.error.error;
      continue;
    }
    const d = r.doc;
    if (d.layouts) {
      const best = (d.layouts.fitting || [])[0];
      row.append(el("td", {}, best ? best.label : (d.reason || "none fits")),
        el("td", { class: "num" }, best ? gib(best.peak) : ""), el("td", {}, ""), cli);
      continue;
    }
    const a = d.answer;
    row.append(el("td", { class: d.fits ? "" : "bad-text", "data-testid": "fit-answer",
      "data-value": a ? String(a.value) : "" }, a ? fitValue(a) : (d.reason || "nothing fits")),
      el("td", { class: "num" }, a ? gib(a.peak_bytes) : ""),
      el("td", { class: "num" }, a ? gib(a.headroom_bytes) : ""), cli);
  }
}

function openFit(fitArgs) {
  const q = new URLSearchParams({ cmd: "fit" });
  for (const [k, v] of Object.entries(fitArgs)) q.set(k, v === true ? "true" : String(v));
  if (state.config && state.config.text.length <= URL_CONFIG_MAX) {
    q.set("config", state.config.text);
    q.set("config-name", state.config.name);
  }
  window.open("?" + q.toString(), "_blank", "noopener");
}

/* ---------- model search and config drop ---------- */
let searchTimer = null;
let catalogNames = new Set();
function searchModels() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    try {
      const rows = await getJSON("/models?q=" + encodeURIComponent($("model").value.trim()));
      const list = rows.models || rows;
      const dl = $("model-list");
      dl.replaceChildren(...list.slice(0, 60).map((m) => el("option", { value: m.name },
        `${m.model_type || ""} ${count(m.params)}${m.hf_id ? " · " + m.hf_id : ""}`)));
      list.forEach((m) => catalogNames.add(m.name));
    } catch (e) { /* the search is a convenience: the estimate names a bad model anyway */ }
  }, 120);
}
function modelLooksComplete(v) {
  return catalogNames.has(v) || /^[\w.-]+\/[\w.-]+$/.test(v) || /^\d+(\.\d+)?[bBmM]$/.test(v);
}

function setConfig(name, text) {
  state.config = text === null ? null : { name: name || "config.json", text };
  $("drop-label").textContent = state.config ? `config: ${state.config.name} (${int(text.length)} characters)` :
    "or drop a config.json here";
  $("config-clear").hidden = !state.config;
  $("model").disabled = !!state.config;
  $("dropzone").classList.toggle("loaded", !!state.config);
}
async function readFile(file) {
  if (!file) return;
  $("result").dataset.state = "pending"; // from now: the file is read before the request goes
  const text = await file.text();
  setConfig(file.name, text);
  changed();
}

/* ---------- start ---------- */
function wire() {
  for (const r of document.querySelectorAll('input[name="cmd"]')) {
    r.addEventListener("change", () => {
      // values of options the next command lacks are kept for the way back (train -> infer -> train keeps --peft)
      for (const input of $("groups").querySelectorAll("[data-flag]")) delete state.remembered[input.dataset.flag];
      const args = Object.assign(state.remembered, readFields());
      // fit asks about the setup just shown: an inference one with --infer
      if (r.value === "fit" && state.prevCmd === "infer") args[flagOf("fit", "infer")] = true;
      if (r.value === "fit" && state.prevCmd === "train") delete args[flagOf("fit", "infer")];
      buildForm(args);
      state.prevCmd = r.value;
      changed();
    });
  }
  $("groups").addEventListener("input", (ev) => {
    if (ev.target.dataset && ev.target.dataset.dest === "infer") buildForm(readArgs());
    changed();
  });
  $("groups").addEventListener("change", (ev) => { if (ev.target.type === "checkbox") return; changed(); });
  $("model").addEventListener("input", () => {
    searchModels();
    if (modelLooksComplete($("model").value.trim())) changed();
  });
  $("model").addEventListener("change", changed);
  $("gpu-name").addEventListener("change", () => {
    $("gpu-size").hidden = $("gpu-name").value !== "__size";
    if (!$("gpu-size").hidden) $("gpu-size").focus();
    changed();
  });
  $("gpu-size").addEventListener("input", changed);
  $("gpu-count").addEventListener("input", changed);
  $("question-kind").addEventListener("change", () => {
    $("layouts-n").hidden = $("question-kind").value !== "layouts";
    changed();
  });
  $("layouts-n").addEventListener("input", changed);
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    readFile(e.dataTransfer.files[0]);
  });
  $("config-pick").addEventListener("click", () => $("config-file").click());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("config-file").click(); }
  });
  $("config-file").addEventListener("change", () => readFile($("config-file").files[0]));
  $("config-clear").addEventListener("click", () => { setConfig(null, null); changed(); });
  $("copy-cli").addEventListener("click", () => copy($("cli").textContent));
  $("option-filter").addEventListener("input", filterOptions);
  $("reset").addEventListener("click", () => {
    for (const input of $("groups").querySelectorAll("[data-flag]")) {
      if (input.type === "checkbox") input.checked = false;
      else input.value = "";
    }
    state.extra = {};
    state.remembered = {};
    showExtras();
    changed();
  });
  $("copy-link").addEventListener("click", () => copy(location.href));
}

// show only the options whose flag or help has every word typed, their groups opened
function filterOptions() {
  const words = $("option-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const group of $("groups").querySelectorAll("details.group")) {
    let any = false;
    for (const field of group.querySelectorAll(".field")) {
      const input = field.querySelector("[data-flag]");
      const text = `${input.dataset.flag} ${input.title}`.toLowerCase();
      const hit = words.every((w) => text.includes(w));
      field.hidden = !hit;
      any = any || hit;
    }
    group.hidden = !any;
    if (words.length) group.open = any;
  }
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    $("copied").textContent = "copied";
  } catch (e) {
    // no clipboard permission (plain http on another host): select the text for a manual copy
    const range = document.createRange();
    range.selectNodeContents($("cli"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("copied").textContent = "selected: press Ctrl+C";
  }
  setTimeout(() => { $("copied").textContent = ""; }, 2000);
}

function fillGpus() {
  const sel = $("gpu-name");
  sel.replaceChildren(el("option", { value: "" }, "no GPU (the peak only)"));
  const bySegment = new Map();
  for (const g of state.gpus) {
    const seg = g.segment || "other";
    if (!bySegment.has(seg)) bySegment.set(seg, []);
    bySegment.get(seg).push(g);
  }
  for (const [seg, gs] of bySegment) {
    const og = el("optgroup", { label: seg });
    for (const g of gs) {
      // the capacity first: the closed select cuts its text at the form's width, and a long name (the MI250X's,
      // a laptop GPU's) would otherwise hide the number
      const text = `${gib(g.memory_bytes)} · ${g.label.replace(/^NVIDIA /, "")}`;
      og.append(el("option", { value: g.name, title: g.label }, text));
    }
    sel.append(og);
  }
  sel.append(el("option", { value: "__size" }, "a size (24GiB, 80GB)…"));
}

async function start() {
  wire();
  try {
    const [options, gpus, models] = await Promise.all([getJSON("/options"), getJSON("/gpus"), getJSON("/models?q=")]);
    state.options = options;
    state.gpus = gpus.gpus || gpus;
    // the whole catalog's names: a name typed in full is estimated at once, before the field loses focus
    (models.models || models).forEach((m) => catalogNames.add(m.name));
  } catch (e) {
    $("status").textContent = "Could not read the option table from the server: " + e.message;
    $("status").className = "status bad";
    return;
  }
  try {
    const formats = await getJSON("/formats");
    state.formats = formats.formats || formats;
    $("format-list").replaceChildren(...state.formats.map((f) => el("option", { value: f.name }, f.summary || "")));
  } catch (e) { /* an older server without the listing: --format stays a plain field */ }
  for (const cmd of Object.keys(state.options)) {
    state.byDest[cmd] = Object.fromEntries(state.options[cmd].map((o) => [o.dest, o]));
  }
  fillGpus();
  const q = new URLSearchParams(location.search);
  const values = {};
  for (const [k, v] of q) values[k] = v;
  if (!values.cmd) Object.assign(values, { cmd: "infer", model: "llama-3-8b", gpu: "rtx-4090" });
  const cmd = ["infer", "train", "fit"].includes(values.cmd) ? values.cmd : "infer";
  document.querySelector(`input[name="cmd"][value="${cmd}"]`).checked = true;
  state.prevCmd = cmd;
  $("model").value = values.model || "";
  setGpu(values.gpu || "");
  if (values.config) setConfig(values["config-name"] || "config.json", values.config);
  if (cmd === "fit") {
    let kind = "max:batch";
    if (values.max) kind = "max:" + values.max;
    for (const k of ["min-gpus", "best-format"]) if (values[k] === "true") kind = k;
    if (values.layouts) { kind = "layouts"; $("layouts-n").value = values.layouts; }
    $("question-kind").value = kind;
    $("layouts-n").hidden = kind !== "layouts";
  }
  // fit's --infer decides which setup's fields to show: set it before the form is built
  buildForm(values);
  const known = new Set(["cmd", "model", "gpu", "config", "config-name", "max", "min-gpus", "best-format",
    "layouts"]);
  for (const input of $("groups").querySelectorAll("[data-flag]")) known.add(input.dataset.flag);
  for (const [k, v] of Object.entries(values)) if (!known.has(k)) state.extra[k] = v === "true" ? true : v;
  showExtras();
  searchModels();
  state.gen += 1;
  run();
}

start();
