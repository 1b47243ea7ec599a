// The drawing page: strokes on a canvas, sent to POST /predict while drawing, answers shown as bars.
// A number written as several digits comes back digit by digit: the page shows the number, one button per
// digit, and the bars and the 28x28 image of the digit selected.
"use strict";

const PEN_WIDTH = 20; // px on the 280 px tall canvas: after scaling to MNIST's 20 px box, about MNIST's 2 px pen
const THROTTLE_MS = 100; // at most ten requests a second while the pen moves

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const statusLine = document.getElementById("status");
const preprocessed = document.getElementById("preprocessed");
const result = document.querySelector(".result");
const digitButtons = document.getElementById("digits");
const bars = makeBars(document.getElementById("bars"));

let drawing = false;
let last = null; // the previous pen position, in canvas pixels
let inked = false; // whether anything has been drawn since the last clear
let generation = 0; // bumped on clear, so answers for an erased drawing are dropped
let inFlight = false;
let pending = false;
let lastSent = -Infinity;
let timer = null;
let shown = null; // the answer on screen
let selected = 0; // which of its digits the bars show

function makeBars(list) {
  // Ten rows, 0 to 9: label, bar, percentage.
  const rows = [];
  for (let i = 0; i < 10; i++) {
    const row = document.createElement("li");
    row.innerHTML = `<span class="label">${i}</span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
    list.append(row);
    rows.push({ row, fill: row.querySelector(".fill"), value: row.querySelector(".value") });
  }
  return rows;
}

function clearCanvas() {
  // Opaque black, not transparent, so the PNG sent is exactly what the user sees.
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = context.fillStyle = "#fff";
  context.lineWidth = PEN_WIDTH;
  context.lineCap = context.lineJoin = "round";
}

function reset() {
  generation++;
  inked = false;
  pending = false;
  clearTimeout(timer);
  timer = null;
  clearCanvas();
  showResult(null);
  statusLine.textContent = "";
  markBusy();
}

function markBusy() {
  // aria-busy tells assistive technology (and tests) whether the answer shown is the final one.
  result.setAttribute("aria-busy", String(inFlight || pending || timer !== null));
}

function position(event) {
  // The pointer in canvas pixels, whatever size CSS gives the canvas.
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (canvas.width / box.width), y: (event.clientY - box.top) * (canvas.height / box.height) };
}

function dot(point) {
  context.beginPath();
  context.arc(point.x, point.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
  context.fill();
}

function lineTo(point) {
  context.beginPath();
  context.moveTo(last.x, last.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  last = point;
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = true;
  inked = true;
  last = position(event);
  dot(last);
  requestPrediction();
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) lineTo(position(e));
  requestPrediction();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  requestPrediction();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);
document.getElementById("clear").addEventListener("click", reset);
document.addEventListener("keydown", (event) => { if (event.key === "Escape") reset(); });

function requestPrediction() {
  // Throttled: one request at a time, at most every THROTTLE_MS; the last drawing is always sent.
  if (!inked) return;
  if (inFlight) {
    pending = true;
  } else {
    const wait = lastSent + THROTTLE_MS - performance.now();
    if (wait <= 0) sendDrawing();
    else if (timer === null) timer = setTimeout(() => { timer = null; requestPrediction(); }, wait);
  }
  markBusy();
}

async function sendDrawing() {
  const sentGeneration = generation;
  inFlight = true;
  pending = false;
  lastSent = performance.now();
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: canvas.toDataURL("image/png") }),
    });
    const answer = await response.json();
    if (sentGeneration !== generation) return;
    if (response.ok) {
      showResult(answer);
      statusLine.textContent = "";
    } else {
      statusLine.textContent = answer.detail || `error ${response.status}`;
    }
  } catch (error) {
    if (sentGeneration === generation) statusLine.textContent = "The server did not answer; is it still running?";
  } finally {
    inFlight = false;
    if (pending) requestPrediction();
    markBusy();
  }
}

function showResult(answer) {
  // answer: the /predict object, or null for an empty canvas.
  shown = answer;
  const digits = answer ? answer.digits ?? [answer] : []; // a photo of clothes is read whole: no digits
  if (selected >= digits.length) selected = 0;
  digit.textContent = answer ? answer.number ?? answer.class : "?";
  if (!answer) confidence.textContent = "draw to begin";
  else if (digits.length === 1) confidence.textContent = `${(100 * digits[0].probability).toFixed(1)}% sure`;
  else {
    const least = Math.min(...digits.map((d) => d.probability));
    confidence.textContent = `${digits.length} digits · the least sure ${(100 * least).toFixed(1)}%`;
  }
  showDigitButtons(digits);
  showDigit(digits.length ? digits[selected] : null);
}

function showDigitButtons(digits) {
  // One button per digit of a number, to pick the digit the bars show; none for a single digit.
  digitButtons.replaceChildren();
  if (digits.length < 2) return;
  digits.forEach((d, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = String(d.label);
    button.setAttribute("aria-pressed", String(i === selected));
    button.title = `digit ${i + 1}: ${d.label}, ${(100 * d.probability).toFixed(1)}% sure`;
    button.addEventListener("click", () => { selected = i; showResult(shown); });
    digitButtons.append(button);
  });
}

function showDigit(answer) {
  // The probabilities and the 28x28 input of one digit, or empty bars.
  const probabilities = answer ? answer.probabilities : new Array(10).fill(0);
  bars.forEach(({ row, fill, value }, i) => {
    fill.style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    value.textContent = answer ? `${(100 * probabilities[i]).toFixed(1)}%` : "";
    row.classList.toggle("top", answer !== null && i === answer.label);
  });
  if (answer) preprocessed.src = answer.preprocessed;
  else preprocessed.removeAttribute("src");
}

async function showModel() {
  const footer = document.getElementById("model");
  try {
    const model = await (await fetch("/model")).json();
    const sizes = model.layers.map((layer) => layer.units).join("-");
    const accuracy = model.test_accuracy == null ? "" : ` · test accuracy ${(100 * model.test_accuracy).toFixed(2)}%`;
    footer.textContent = `Network ${sizes} · ${model.parameters.toLocaleString("en")} parameters${accuracy}`;
    if (model.dataset === "fashion-mnist") showClothes(model.classes);
  } catch (error) {
    footer.textContent = "Model details unavailable.";
  }
}

function showClothes(classes) {
  // A Fashion-MNIST model: its ten classes by name, and what its inputs are made like.
  document.title = "digitnet: draw a piece of clothing";
  canvas.setAttribute("aria-label", "Drawing area: draw one piece of clothing with the mouse, a pen or a finger");
  document.getElementById("hint").textContent =
    "Draw a piece of clothing (a T-shirt, trousers, a shoe, a bag...) filling the black box, light on black.";
  document.getElementById("seen-caption").innerHTML =
    "What the network saw:<br>28&times;28 pixels, fitted like Fashion-MNIST";
  digit.style.fontSize = "2rem"; // a name, not a single digit
  bars.forEach(({ row }, i) => {
    row.style.gridTemplateColumns = "6.4rem 1fr 3.4rem";
    const label = row.querySelector(".label");
    label.textContent = classes[i];
    label.style.textAlign = "left";
  });
}

reset();
showModel();
