// The page: upload photos once, then re-hedge them locally as the target moves.
// Each answer comes with its answer path (the answer at every slider target),
// so moving the slider never sends a photo again. No external resources.
"use strict";

const slider = document.getElementById("accuracy");
const sliderValue = document.getElementById("accuracy-value");
const drop = document.getElementById("drop");
const picker = document.getElementById("files");
const list = document.getElementById("results");
const statusLine = document.getElementById("status");
const template = document.getElementById("card");

const cards = [];           // {el, record} per photo, record null until answered
let displayNames = null;    // taxonomy node -> display name
const CONCURRENCY = 2;      // the server runs one inference thread: more only queues
const queue = [];
let running = 0;

// A share as the command line writes it (hedged.cli.predict.format_share): one decimal,
// more when needed so that nothing short of certain reads as 100% (or as 0%).
function pct(x) {
  if (x >= 1) return "100%";
  if (x <= 0) return "0%";
  for (let d = 1; d < 12; d++) {
    const text = (100 * x).toFixed(d);
    const v = parseFloat(text);
    if (v !== 0 && v !== 100) return (d > 1 ? text.replace(/0+$/, "").replace(/\.$/, "") : text) + "%";
  }
  return (100 * x).toPrecision(3) + "%";
}
function target() { return Math.round(parseFloat(slider.value) * 1000) / 1000; }

async function loadTaxonomy() {
  try {
    const r = await fetch("/v1/taxonomy");
    if (!r.ok) return;
    const t = await r.json();
    displayNames = Object.fromEntries(t.nodes.map((n) => [n.name, n.display_name]));
  } catch (e) { /* breadcrumbs fall back to node names */ }
}

function show(name) { return (displayNames && displayNames[name]) || name; }

// The answer for target a: the first step of the answer path with a <= max_target
// (the last step is always the root at 1.0), as the library reads it.
function answerAt(record, a) {
  const path = record.answer_path;
  if (!path || !path.length) return {node: record.node, display_name: record.display_name, path: record.path, probability: record.probability};
  return path.find((step) => a <= step.max_target) || path[path.length - 1];
}

function render(card) {
  const {el, record} = card;
  if (!record || record.error) return;
  // the record's warnings (a title that narrowed the answer, a tiny image): as the CLI prints them
  el.querySelector(".notes").textContent = (record.warnings || []).join(" ");
  const answer = el.querySelector(".answer");
  const ol = el.querySelector(".crumbs ol");
  const leafNote = el.querySelector(".leaf-note");
  el.querySelector(".leaf-name").textContent = record.leaf_guess_display_name;
  el.querySelector(".leaf-prob").textContent = "p = " + pct(record.leaf_probability);
  if (record.in_taxonomy === false) {
    // The detector's verdict holds at every target: the same words as the command line.
    answer.dataset.kind = "outside";
    el.querySelector(".node").textContent = record.headline;
    el.querySelector(".prob").textContent = "";
    ol.replaceChildren();
    el.querySelector(".leaf .label").textContent = "If it were, the model would guess";
    leafNote.textContent = "";
    el.querySelector(".why-toggle").hidden = true;
    el.dataset.node = "";
    return;
  }
  const ans = answerAt(record, target());
  const root = ans.path.length === 1;
  answer.dataset.kind = root ? "not_sure" : "answer";
  // The root says nothing by itself: "not sure beyond Clothing", never "Clothing 100%".
  el.querySelector(".node").textContent = root ? "Not sure beyond " + ans.display_name : ans.display_name;
  el.querySelector(".prob").textContent = root ? "" : "p = " + pct(ans.probability);
  ol.replaceChildren(...(root ? [] : ans.path).map((node, i) => {
    const li = document.createElement("li");
    li.textContent = show(node);
    if (i === ans.path.length - 1) li.setAttribute("aria-current", "location");
    return li;
  }));
  el.querySelector(".leaf .label").textContent = "Leaf guess";
  const at = record.leaf_at_target;
  leafNote.textContent = root && at !== null && at !== undefined
    ? `answered at targets up to ${pct(at)}` : "";
  el.querySelector(".why-toggle").hidden = false;
  el.dataset.node = ans.node;
  // A heat map shown for another node than the new answer: swap in that node's if
  // it is cached, else hide it; the next press asks for the new node.
  if (card.whyShown && card.whyShown !== ans.node) {
    if (card.why[ans.node]) showWhy(card, card.why[ans.node]);
    else hideWhy(card);
  }
}

// "Show why": Grad-CAM of the answered node over the thumbnail, and the two
// children (or, for a leaf, the runner-up leaves) it was weighed against.
// One request per node and photo; later presses toggle the cached answer.
function showWhy(card, data) {
  const el = card.el;
  const first = data.explained[0];
  let heat = el.querySelector(".thumb img.heat");
  if (!heat) {
    heat = document.createElement("img");
    heat.className = "heat";
    el.querySelector(".thumb").append(heat);
  }
  heat.src = first.heatmap;
  heat.alt = "Heat map: where the photo shows " + first.display_name;
  heat.hidden = false;
  // A "not sure" answer is explained by the children it could not choose between.
  const unsure = first.role === "child";
  el.querySelector(".why-caption").textContent = unsure
    ? "Not sure between: " + first.display_name + " " + pct(first.probability) : "Why: " + first.display_name;
  const rest = data.explained.slice(1);
  const lead = unsure ? "and: " : (rest.length && rest[0].role === "alternative" ? "Ruled out: " : "Between: ");
  el.querySelector(".why-others").textContent = rest.length
    ? lead + rest.map((e) => `${e.display_name} ${pct(e.probability)}`).join(" · ") : "";
  el.querySelector(".why-toggle").setAttribute("aria-pressed", "true");
  card.whyShown = first.node;
}

function hideWhy(card) {
  const el = card.el;
  const heat = el.querySelector(".thumb img.heat");
  if (heat) heat.hidden = true;
  el.querySelector(".why-caption").textContent = "";
  el.querySelector(".why-others").textContent = "";
  el.querySelector(".why-toggle").setAttribute("aria-pressed", "false");
  card.whyShown = null;
}

async function toggleWhy(card) {
  const el = card.el;
  const button = el.querySelector(".why-toggle");
  if (card.whyShown) { hideWhy(card); return; }
  if (button.getAttribute("aria-busy") === "true") return;  // already asking
  const node = el.dataset.node;
  if (card.why[node]) { showWhy(card, card.why[node]); return; }
  const error = el.querySelector(".error");
  const form = new FormData();
  form.append("image", card.file, card.file.name);
  const url = `/v1/explain?accuracy=${target()}&node=${encodeURIComponent(node)}`;
  button.setAttribute("aria-busy", "true");
  el.querySelector(".why-caption").textContent = "Explaining…";
  try {
    const r = await fetch(url, {method: "POST", body: form});
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.detail) || ("the server answered " + r.status));
    card.why[node] = body;
    error.hidden = true;
    // Shown only if the slider still answers this node; else it waits in the cache.
    if (el.dataset.node === node) showWhy(card, body);
    else hideWhy(card);
  } catch (e) {
    hideWhy(card);
    error.textContent = e instanceof TypeError ? "the server could not be reached" : e.message;
    error.hidden = false;
  } finally {
    button.removeAttribute("aria-busy");
  }
}

function fail(card, message) {
  const el = card.el;
  el.querySelector(".pending").hidden = true;
  const err = el.querySelector(".error");
  err.textContent = message;
  err.hidden = false;
  el.classList.add("failed");
}

function addCard(file) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.querySelector(".file").textContent = file.name;
  const thumb = el.querySelector(".thumb");
  const noPreview = () => {
    const none = document.createElement("div");
    none.className = "none";
    none.setAttribute("role", "img");
    none.setAttribute("aria-label", "No preview for " + file.name);
    none.textContent = "no preview";
    return none;
  };
  if (file.type.startsWith("image/")) {
    const img = document.createElement("img");
    img.alt = "Photo " + file.name;
    // A file that only claims to be an image: no broken-image icon, the same box as any other.
    img.addEventListener("error", () => img.replaceWith(noPreview()), {once: true});
    img.src = URL.createObjectURL(file);
    thumb.append(img);
  } else {
    thumb.append(noPreview());
  }
  // Heat maps on a 120 px thumbnail are hard to read: a click enlarges the photo and its map.
  thumb.addEventListener("click", () => el.classList.toggle("enlarged"));
  thumb.title = "Click to enlarge";
  list.append(el);
  const title = document.getElementById("title").value.trim();
  const card = {el, record: null, file, why: {}, whyShown: null, title};
  el.querySelector(".why-toggle").addEventListener("click", () => toggleWhy(card));
  cards.push(card);
  return card;
}

async function classify(card) {
  const form = new FormData();
  form.append("images", card.file, card.file.name);
  if (card.title) form.append("titles", card.title);
  const url = "/v1/predict?path_over_targets=true&accuracy=" + target();
  let body = null;
  try {
    const r = await fetch(url, {method: "POST", body: form});
    body = await r.json().catch(() => null);
    if (!r.ok) {
      fail(card, (body && body.detail) || ("the server answered " + r.status));
      return;
    }
  } catch (e) {
    fail(card, "the server could not be reached");
    return;
  }
  const record = body.results[0];
  if (record.error) { fail(card, record.error); return; }
  card.record = record;
  card.el.querySelector(".pending").hidden = true;
  card.el.querySelector(".answer-block").hidden = false;
  card.el.classList.add("answered");
  render(card);
}

function pump() {
  while (running < CONCURRENCY && queue.length) {
    const card = queue.shift();
    running += 1;
    classify(card).finally(() => {
      running -= 1;
      updateStatus();
      pump();
    });
  }
  updateStatus();
}

function updateStatus() {
  const left = queue.length + running;
  statusLine.textContent = left ? `Classifying ${left} photo${left > 1 ? "s" : ""}…` : (cards.length ? `${cards.length} photo${cards.length > 1 ? "s" : ""}` : "");
}

function addFiles(files) {
  for (const file of files) queue.push(addCard(file));
  pump();
}

slider.addEventListener("input", () => {
  sliderValue.textContent = pct(target());
  for (const card of cards) render(card);
});

picker.addEventListener("change", () => { addFiles(picker.files); picker.value = ""; });
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  if (ev.dataTransfer && ev.dataTransfer.files.length) addFiles(ev.dataTransfer.files);
});
// A photo dropped beside the zone must not navigate away from the page.
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());

sliderValue.textContent = pct(target());
loadTaxonomy().then(() => cards.forEach(render));
