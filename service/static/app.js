// Draw-a-digit page: a drawing pad and an upload box, both answered by the service's
// /predict_image (the digit and its probabilities) and /preprocess_image (the 28x28 input).
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const modelInput = $("model-input").getContext("2d");
const bars = [];
const DEBOUNCE_MS = 150;
const KEY_STORAGE = "mnist-api-key";

let drawing = false;
let hasInk = false;
let debounceTimer = 0;
let requestSeq = 0; // only the answer to the newest request is shown
let inFlight = null; // AbortController of the newest request
let previewUrl = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- API -------------------------------------------------------------------------------

async function post(path, { body, signal } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { method: "POST", body, headers, signal });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, payload.error || response.statusText || "request failed");
  }
  return payload;
}

function imageForm(blob) {
  const form = new FormData();
  form.append("image", blob, blob.name || "digit.png");
  return form;
}

function describeError(error) {
  if (error instanceof ApiError) {
    switch (error.status) {
      case 400: return `The server could not read this image: ${error.message}.`;
      case 401: return "This server needs an API key: enter it above, then try again.";
      case 413: return `This image is too large: ${error.message}.`;
      case 422: return "No digit found: draw (or upload) a clearer, larger digit.";
      default: return `The request failed (HTTP ${error.status}): ${error.message}.`;
    }
  }
  return `Could not reach the server (${error.message}). Is it still running?`;
}

function showMessage(text, kind = "info") {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
}

function showError(error) {
  resetResult(); // never leave an older answer next to an error about a new input
  if (error instanceof ApiError && error.status === 401) showKeyForm();
  showMessage(describeError(error), "error");
}

// ---- Predictions -----------------------------------------------------------------------

// `image` is a Blob/File or a promise of one; the request counts as started right away.
async function classify(image) {
  const seq = ++requestSeq;
  inFlight?.abort();
  const controller = new AbortController();
  inFlight = controller;
  document.body.dataset.busy = "true";
  try {
    const blob = await image;
    const [result, preprocessed] = await Promise.all([
      post("/predict_image", { body: imageForm(blob), signal: controller.signal }),
      post("/preprocess_image", { body: imageForm(blob), signal: controller.signal }),
    ]);
    if (seq !== requestSeq) return;
    showPrediction(result);
    showModelInput(preprocessed.image);
    showMessage("");
  } catch (error) {
    if (seq !== requestSeq || error.name === "AbortError") return;
    showError(error);
  } finally {
    if (seq === requestSeq) document.body.dataset.busy = "false";
  }
}

function buildBars() {
  $("bars").innerHTML = [...Array(10).keys()]
    .map(
      (d) =>
        `<div class="bar" role="meter" aria-label="Digit ${d}" ` +
        'aria-valuemin="0" aria-valuemax="100">' +
        `<span class="bar-label">${d}</span><span class="bar-track"><span class="bar-fill">` +
        '</span></span><span class="bar-value"></span></div>',
    )
    .join("");
  bars.push(...$("bars").children);
  resetResult();
}

function showPrediction({ digit, confidence, probabilities, uncertain }) {
  $("digit").textContent = String(digit);
  $("confidence").textContent = uncertain
    ? `Not sure this is a digit: best guess ${digit}, ${formatPercent(confidence)} confident`
    : `${formatPercent(confidence)} confident`;
  $("digit").classList.toggle("uncertain", uncertain === true);
  probabilities.forEach((p, i) => setBar(bars[i], p, i === digit));
}

function setBar(row, probability, top) {
  const percent = probability * 100;
  row.classList.toggle("top", top);
  row.setAttribute("aria-valuenow", percent.toFixed(1));
  row.setAttribute("aria-valuetext", formatPercent(probability));
  row.querySelector(".bar-fill").style.width = `${percent}%`;
  row.querySelector(".bar-value").textContent = formatPercent(probability);
}

function formatPercent(probability) {
  const percent = probability * 100;
  if (percent >= 99.95) return ">99.9%"; // never claim certainty
  return `${percent < 0.05 ? "0" : percent.toFixed(1)}%`;
}

function showModelInput(rows) {
  const image = modelInput.createImageData(28, 28);
  rows.flat().forEach((value, i) => {
    const level = Math.round(value * 255);
    image.data.set([level, level, level, 255], i * 4);
  });
  modelInput.putImageData(image, 0, 0);
}

function resetResult() {
  $("digit").textContent = "–";
  $("digit").classList.remove("uncertain");
  $("confidence").textContent = "Draw or upload a digit to start.";
  bars.forEach((row) => setBar(row, 0, false));
  modelInput.fillStyle = "#000";
  modelInput.fillRect(0, 0, 28, 28);
}

// ---- Drawing pad -----------------------------------------------------------------------

function setUpPad() {
  const scale = Math.min(Math.max(window.devicePixelRatio || 1, 1), 3);
  pad.width = pad.height = Math.round(280 * scale);
  ink.lineWidth = pad.width / 12;
  ink.lineCap = ink.lineJoin = "round";
  ink.strokeStyle = "#fff";
  wipePad();
}

function wipePad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  clearTimeout(debounceTimer);
}

function clearPad() {
  wipePad();
  requestSeq++; // drop any answer still on its way
  inFlight?.abort();
  document.body.dataset.busy = "false";
  resetResult();
  showMessage("");
  $("upload-figure").hidden = true;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

function classifyPad() {
  clearTimeout(debounceTimer);
  if (hasInk) classify(new Promise((resolve) => pad.toBlob(resolve, "image/png")));
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  $("upload-figure").hidden = true;
  drawing = true;
  hasInk = true;
  const [x, y] = padPoint(event);
  ink.beginPath();
  ink.moveTo(x, y);
  ink.lineTo(x, y); // a tap leaves a dot
  ink.stroke();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents?.() ?? [];
  for (const e of events.length ? events : [event]) ink.lineTo(...padPoint(e));
  ink.stroke();
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(classifyPad, DEBOUNCE_MS);
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  classifyPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", clearPad);

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement;
  if (event.key === "Escape" && !typing) clearPad();
});

// ---- Upload ----------------------------------------------------------------------------

function classifyFile(file) {
  if (!file) return;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = $("upload-preview");
  preview.hidden = false;
  preview.src = previewUrl;
  $("upload-name").textContent = file.name;
  $("upload-figure").hidden = false;
  wipePad(); // the answer shown is now about the file, not an old drawing
  classify(file);
}

$("upload-preview").addEventListener("error", (event) => {
  event.target.hidden = true; // the browser cannot show it either; the caption stays
});

$("file-input").addEventListener("change", (event) => {
  classifyFile(event.target.files[0]);
  event.target.value = ""; // choosing the same file again still triggers "change"
});

// The whole page takes drops (a file dropped beside the box must not replace the page).
const dropZone = $("drop-zone");
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) dropZone.classList.remove("dragging"); // left the window
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  classifyFile(event.dataTransfer.files[0]);
});

// ---- Model information and API key -----------------------------------------------------

async function loadModelInfo() {
  try {
    const info = await post("/model_info");
    $("model-version").textContent = info.tag || `sha256 ${info.sha256.slice(0, 12)}`;
    $("model-version").title = `sha256 ${info.sha256}`;
    const accuracy = info.test_accuracy;
    $("model-accuracy").textContent =
      accuracy == null ? "" : ` · ${(accuracy * 100).toFixed(2)}% test accuracy`;
    document.body.dataset.model = "ready";
  } catch (error) {
    $("model-version").textContent = "unavailable";
    showError(error);
  }
}

function showKeyForm() {
  $("api-key-form").hidden = false;
  $("api-key").focus();
}

$("api-key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("api-key-form").hidden = true;
  showMessage("");
  loadModelInfo();
  classifyPad();
});

buildBars();
setUpPad();
loadModelInfo();
