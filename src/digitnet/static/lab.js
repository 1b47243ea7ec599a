// The lab page: design and train networks, watch them learn (server-sent events), compare runs, look inside one.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const PEN_WIDTH = 20; // px on the 280 px canvas: after scaling to MNIST's 20 px box, about MNIST's 2 px pen
const THROTTLE_MS = 60; // at most about sixteen drawings a second while the pen moves
const TRAINING_IMAGES = 55000; // either data set's 60,000 less the 5,000 held out for validation
const COLORS = ["#2463eb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c", "#5c940d", "#364fc7"];

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const state = {
  limits: null,
  datasets: [], // {name, title, classes} of each data set the lab trains on
  current: null, // the job training (or the last one that ended, still shown)
  waiting: [],
  runs: [],
  sort: { key: "run", descending: true },
  picked: new Set(), // runs whose curves are overlaid
  histories: new Map(), // run -> history rows, for the overlay
  selected: null, // the run looked inside
  charts: {},
};

// ---------------------------------------------------------------- talking to the lab

function withToken(path) {
  return TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;
}

async function api(path, { method = "GET", body } = {}) {
  // The answer as {ok, status, data}; a network failure is an answer too (status 0).
  const headers = {};
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, data };
  } catch (error) {
    return { ok: false, status: 0, data: { detail: "The lab did not answer; is it still running?" } };
  }
}

function listen() {
  // EventSource reconnects by itself; each connection starts with the lab's whole state.
  const source = new EventSource(withToken("/api/events"));
  source.onopen = () => { $("#connection").textContent = "connected"; };
  source.onerror = () => { $("#connection").textContent = "reconnecting…"; };
  source.onmessage = (message) => handleEvent(JSON.parse(message.data));
}

function handleEvent(event) {
  switch (event.type) {
    case "state":
      state.limits = event.limits;
      state.datasets = event.datasets;
      showDatasets();
      state.waiting = event.waiting;
      if (event.current) showJob(event.current, true);
      showLimits();
      renderQueue();
      loadRuns();
      break;
    case "queued":
      state.waiting.push(event.job);
      renderQueue();
      loadRuns();
      break;
    case "starting":
    case "begin":
      state.waiting = state.waiting.filter((job) => job.run !== event.job.run);
      renderQueue();
      showJob(event.job, true);
      loadRuns();
      break;
    case "stopping":
      if (isCurrent(event.job.run)) showJob(event.job, false);
      break;
    case "progress":
      if (isCurrent(event.run)) showProgress(event.steps_done / event.steps, event.seconds_left);
      break;
    case "epoch":
      if (isCurrent(event.run)) addEpoch(event.row, event.seconds_left);
      break;
    case "evaluated":
      if (isCurrent(event.run)) state.current.metrics = event.metrics;
      break;
    case "end":
      endJob(event.job);
      break;
  }
}

const isCurrent = (run) => state.current !== null && state.current.run === run;

// ---------------------------------------------------------------- designing a network

function addLayer(width = 128) {
  const list = $("#layer-list");
  const item = document.createElement("li");
  item.innerHTML = `<label>Layer <span class="number"></span>
      <input type="number" class="width" min="1" step="1" value="${width}"></label>
    <button type="button" class="remove-layer" aria-label="Remove this layer">Remove</button>`;
  item.querySelector(".remove-layer").addEventListener("click", () => { item.remove(); formChanged(); });
  item.querySelector("input").addEventListener("input", formChanged);
  list.append(item);
  formChanged();
}

function number(text) {
  // A field's value as JSON: a number, null when empty, or the text itself for the lab to name what is wrong.
  const trimmed = String(text).trim();
  if (trimmed === "") return null;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

function settings() {
  // The form as the body of POST /api/train: TrainConfig's own field names.
  const form = $("#train-form");
  const descent = form.elements.descent.value;
  return {
    hidden: $$("#layer-list .width").map((input) => number(input.value)),
    dataset: form.elements.dataset.value,
    activation: form.elements.activation.value,
    batch_size: descent === "batch" ? "full" : descent === "stochastic" ? 1 : number(form.elements.batch_size.value),
    optimizer: form.elements.optimizer.value,
    learning_rate: number(form.elements.learning_rate.value),
    epochs: number(form.elements.epochs.value),
    seed: number(form.elements.seed.value),
    train_size: number(form.elements.train_size.value),
  };
}

function showErrors(detail = null, field = null) {
  // One message at most, next to the field it names (or under the form when it names none).
  $$("#train-form .error").forEach((p) => { p.textContent = ""; });
  $$("#train-form .invalid").forEach((element) => element.classList.remove("invalid"));
  if (!detail) return;
  const place = $(`#train-form .error[data-field="${field || ""}"]`) || $('#train-form .error[data-field=""]');
  place.textContent = detail;
  place.closest("fieldset, form").classList.add("invalid");
}

let validateTimer = null;
function formChanged() {
  $$("#layer-list .number").forEach((span, i) => { span.textContent = String(i + 1); });
  const body = settings();
  const sizes = [784, ...body.hidden, 10];
  const parameters = sizes.slice(1).reduce((sum, units, i) => sum + (sizes[i] + 1) * units, 0);
  $("#network-size").textContent = Number.isFinite(parameters)
    ? `${sizes.join("-")}: ${parameters.toLocaleString("en")} parameters` : "";
  clearTimeout(validateTimer);
  validateTimer = setTimeout(async () => {
    const answer = await api("/api/validate", { method: "POST", body: settings() });
    if (answer.status === 422) showErrors(answer.data.detail, answer.data.field);
    else if (answer.ok) showErrors();
  }, 250);
}

async function train(event) {
  event.preventDefault();
  clearTimeout(validateTimer);
  const answer = await api("/api/train", { method: "POST", body: settings() });
  if (!answer.ok) {
    showErrors(answer.data.detail || `error ${answer.status}`, answer.data.field);
    return;
  }
  showErrors();
  const { job, position } = answer.data;
  if (position > 0) $("#run-status").textContent = `${job.run} is waiting: ${position} run(s) before it.`;
}

function showDatasets() {
  // The data sets the lab offers, by name, in the design form and above the scatter chart.
  for (const select of [$("#train-form").elements.dataset, $("#scatter-dataset")]) {
    const chosen = select.value;
    select.replaceChildren(...state.datasets.map((dataset) => new Option(dataset.title, dataset.name)));
    if (state.datasets.some((dataset) => dataset.name === chosen)) select.value = chosen;
  }
}

function datasetTitle(name) {
  return state.datasets.find((dataset) => dataset.name === name)?.title ?? name ?? "";
}

function showLimits() {
  const limits = state.limits;
  $("#limits").textContent = `This lab allows up to ${limits.max_depth} hidden layers of up to ` +
    `${limits.max_width.toLocaleString("en")} neurons, and ${limits.max_epochs} epochs.`;
}

// ---------------------------------------------------------------- watching a run learn

function layersText(hidden) {
  return [784, ...hidden, 10].join("-");
}

function showJob(job, reset) {
  const same = isCurrent(job.run);
  state.current = { ...(same ? state.current : {}), ...job };
  if (reset || !same) {
    $("#epoch-log").replaceChildren();
    job.history.forEach((row) => logEpoch(row));
    drawLiveCharts();
  }
  $("#stop").disabled = !["starting", "training"].includes(job.state);
  const config = job.config;
  const descent = config.batch_size === "full" ? "batch descent" : config.batch_size === 1 ? "stochastic descent"
    : `mini-batches of ${config.batch_size}`;
  const what = `${job.run}: ${layersText(config.hidden)}, ${config.activation.join("/")}, ${descent}, ` +
    `${config.optimizer}, on ${datasetTitle(config.dataset)}`;
  const doing = { starting: "building and compiling", training: "training", stopping: "stopping after this epoch" };
  $("#run-status").textContent = `${what} · ${doing[job.state] || job.state}`;
  showProgress(job.steps ? job.steps_done / job.steps : 0, job.seconds_left);
}

function showProgress(fraction, secondsLeft) {
  const job = state.current;
  $("#epoch-progress").value = Number.isFinite(fraction) ? fraction : 0;
  const epoch = job ? `epoch ${Math.max(job.epoch || 0, 1)} of ${job.epochs}` : "";
  $("#time-left").textContent = secondsLeft == null ? epoch : `${epoch} · about ${duration(secondsLeft)} left`;
}

function duration(seconds) {
  if (seconds < 1) return "under a second";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function addEpoch(row, secondsLeft) {
  const job = state.current;
  if (job.history.some((done) => done.epoch === row.epoch)) return; // already in the state a reconnection sent
  job.history.push(row);
  job.epoch = row.epoch;
  logEpoch(row);
  updateLiveCharts();
  showProgress(1, secondsLeft);
}

function logEpoch(row) {
  const item = document.createElement("li");
  item.textContent = `epoch ${row.epoch}: loss ${row.loss.toFixed(4)}, accuracy ${percent(row.accuracy)}, ` +
    `validation loss ${row.val_loss.toFixed(4)}, accuracy ${percent(row.val_accuracy)} (${row.seconds.toFixed(2)} s)`;
  $("#epoch-log").prepend(item);
}

function endJob(job) {
  state.waiting = state.waiting.filter((waiting) => waiting.run !== job.run);
  renderQueue();
  if (isCurrent(job.run)) {
    state.current = { ...state.current, ...job, history: state.current.history };
    $("#stop").disabled = true;
    const metrics = state.current.metrics;
    const outcome = job.state === "finished" && metrics
      ? `finished: test accuracy ${percent(metrics.test_accuracy)} on ${datasetTitle(job.config.dataset)}`
      : `${job.state}${job.message ? `: ${job.message}` : ""}`;
    $("#run-status").textContent = `${job.run}: ${outcome}`;
    $("#time-left").textContent = "";
    if (job.state === "finished") $("#epoch-progress").value = 1;
  }
  state.histories.delete(job.run);
  loadRuns();
}

async function stopRun(run) {
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/stop`, { method: "POST" });
  if (!answer.ok) $("#run-status").textContent = answer.data.detail;
}

function renderQueue() {
  const list = $("#queue");
  list.replaceChildren();
  for (const job of state.waiting) {
    const item = document.createElement("li");
    item.innerHTML = `<span></span> <button type="button">Remove</button>`;
    item.querySelector("span").textContent = `${job.run}: ${layersText(job.config.hidden)}, ${job.epochs} epochs · waiting`;
    item.querySelector("button").addEventListener("click", () => stopRun(job.run));
    list.append(item);
  }
  if (!state.waiting.length) list.innerHTML = '<li class="empty">nothing</li>';
}

// ---------------------------------------------------------------- charts (uPlot)

const EPOCH_AXIS = { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] }; // whole epochs only

function chart(id, options, data) {
  // A uPlot chart in the element `id`, replacing the one there; sized to its box.
  const element = document.getElementById(id);
  if (state.charts[id]) state.charts[id].destroy();
  const width = Math.max(element.clientWidth, 240);
  state.charts[id] = new uPlot({ width, height: 200, legend: { live: false }, ...options }, data, element);
  return state.charts[id];
}

function series(label, color, extra = {}) {
  return { label, stroke: color, width: 2, spanGaps: true, points: { show: true, size: 5 }, ...extra };
}

function liveData() {
  const rows = state.current ? state.current.history : [];
  const column = (key) => rows.map((row) => row[key]);
  return {
    loss: [column("epoch"), column("loss"), column("val_loss")],
    accuracy: [column("epoch"), column("accuracy"), column("val_accuracy")],
  };
}

function drawLiveCharts() {
  const data = liveData();
  const axes = (label) => [EPOCH_AXIS, { label, size: 60 }];
  chart("loss-chart", { title: "Loss", scales: { x: { time: false } }, axes: axes("loss"),
    series: [{ label: "epoch" }, series("training", COLORS[0]), series("validation", COLORS[1], { dash: [6, 4] })] },
  data.loss);
  chart("accuracy-chart", { title: "Accuracy", scales: { x: { time: false } }, axes: axes("accuracy"),
    series: [{ label: "epoch" }, series("training", COLORS[0]), series("validation", COLORS[1], { dash: [6, 4] })] },
  data.accuracy);
}

function updateLiveCharts() {
  const data = liveData();
  state.charts["loss-chart"].setData(data.loss);
  state.charts["accuracy-chart"].setData(data.accuracy);
}

function drawScatter() {
  // Test accuracy against parameters or width, one series per depth; the best run at each x of each depth.
  // Runs of one data set only: accuracies on two test sets do not compare.
  const key = $("#scatter-x").value, dataset = $("#scatter-dataset").value;
  const done = state.runs.filter((run) => run.test_accuracy != null && run[key] > 0 && run.dataset === dataset);
  const xs = [...new Set(done.map((run) => run[key]))].sort((a, b) => a - b);
  const depths = [...new Set(done.map((run) => run.depth))].sort((a, b) => a - b);
  const columns = depths.map((depth) => xs.map((x) => {
    const accuracies = done.filter((run) => run.depth === depth && run[key] === x).map((run) => run.test_accuracy);
    return accuracies.length ? Math.max(...accuracies) : null;
  }));
  chart("scatter-chart", {
    scales: { x: { time: false, distr: 3 } },
    axes: [{ label: key }, { label: "test accuracy", size: 60 }],
    series: [{ label: key }, ...depths.map((depth, i) => series(`${depth} hidden layer${depth === 1 ? "" : "s"}`,
      COLORS[i % COLORS.length], { paths: () => null, points: { show: true, size: 9 } }))],
  }, [xs, ...columns]);
}

async function drawOverlay() {
  const metric = $("#overlay-metric").value;
  const runs = [...state.picked];
  for (const run of runs) {
    if (!state.histories.has(run)) {
      const answer = await api(`/api/runs/${encodeURIComponent(run)}`);
      state.histories.set(run, answer.ok ? answer.data.history : []);
    }
  }
  const longest = Math.max(0, ...runs.map((run) => state.histories.get(run).length));
  const epochs = Array.from({ length: longest }, (_, i) => i + 1);
  const columns = runs.map((run) => epochs.map((epoch) => {
    const row = state.histories.get(run).find((r) => r.epoch === epoch);
    return row ? row[metric] : null;
  }));
  chart("overlay-chart", {
    scales: { x: { time: false } },
    axes: [EPOCH_AXIS, { label: metric.replace("_", " "), size: 60 }],
    series: [{ label: "epoch" }, ...runs.map((run, i) => series(run, COLORS[i % COLORS.length]))],
  }, [epochs, ...columns]);
  $("#overlay-note").textContent = runs.length ? `Comparing ${runs.length} run${runs.length === 1 ? "" : "s"}.`
    : "Tick runs in the table to overlay them.";
}

// ---------------------------------------------------------------- the runs table

const percent = (value) => (value == null ? "–" : `${(100 * value).toFixed(2)}%`);

function sortValue(run, key) {
  if (key === "layers") return run.depth * 1e7 + (run.width || 0);
  if (key === "batch") return run.batch_size === "full" ? Infinity : run.batch_size;
  return run[key];
}

async function loadRuns() {
  const answer = await api("/api/runs");
  if (!answer.ok) return;
  state.runs = answer.data.runs;
  renderRuns();
  drawScatter();
  if (state.picked.size) drawOverlay();
}

function renderRuns() {
  const { key, descending } = state.sort;
  const rows = [...state.runs].sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    if (x == null || y == null) return x == null ? 1 : -1; // runs without the figure go last either way
    return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
  });
  $$("#runs-table th[data-key]").forEach((th) => {
    th.setAttribute("aria-sort", th.dataset.key === key ? (descending ? "descending" : "ascending") : "none");
  });
  $("#runs-table tbody").replaceChildren(...rows.map(runRow));
}

function runRow(run) {
  const row = document.createElement("tr");
  row.dataset.run = run.run;
  row.classList.toggle("selected", run.run === state.selected);
  const batch = run.batch_size === "full" ? "all" : run.batch_size;
  const cells = [datasetTitle(run.dataset), run.hidden ? layersText(run.hidden) : "",
    run.parameters?.toLocaleString("en") ?? "", run.activation ?? "",
    batch ?? "", run.epochs ? `${run.epochs_done}/${run.epochs}` : "", percent(run.val_accuracy),
    percent(run.test_accuracy), run.train_seconds ? `${run.train_seconds.toFixed(1)} s` : "–"];
  row.innerHTML = `<td><input type="checkbox" class="pick" aria-label="Overlay this run's curves"></td>
    <th scope="row"><button type="button" class="select link"></button></th>` +
    cells.map(() => "<td></td>").join("") + '<td class="state"><span></span></td>';
  row.querySelector(".select").textContent = run.run;
  $$("td", row).slice(1, -1).forEach((td, i) => { td.textContent = cells[i]; });
  const stateCell = row.querySelector(".state span");
  stateCell.textContent = run.state;
  if (run.message) stateCell.title = run.message;
  if (run.state === "stopped") {
    const resume = document.createElement("button");
    resume.type = "button";
    resume.className = "resume";
    resume.textContent = "Resume";
    resume.addEventListener("click", () => resumeRun(run.run));
    row.querySelector(".state").append(" ", resume);
  }
  const pick = row.querySelector(".pick");
  pick.checked = state.picked.has(run.run);
  pick.disabled = !run.epochs_done;
  pick.addEventListener("change", () => {
    if (pick.checked) state.picked.add(run.run);
    else state.picked.delete(run.run);
    drawOverlay();
  });
  row.querySelector(".select").addEventListener("click", () => selectRun(run.run));
  return row;
}

async function resumeRun(run) {
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/resume`, { method: "POST" });
  if (!answer.ok) $("#run-status").textContent = answer.data.detail;
}

// ---------------------------------------------------------------- looking inside a run

async function selectRun(run) {
  state.selected = run;
  renderRuns();
  $("#inspect-run").textContent = run;
  $("#inspect-summary").textContent = "Reading the test set…";
  $(".inspect-grid").hidden = true;
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/inspect`);
  if (state.selected !== run) return;
  if (!answer.ok) {
    $("#inspect-summary").textContent = answer.data.detail;
    return;
  }
  const result = answer.data;
  const errors = result.n - Math.round(result.accuracy * result.n);
  $("#inspect-summary").textContent = `Test accuracy on ${result.title} ${percent(result.accuracy)} (${errors} of ` +
    `${result.n.toLocaleString("en")} test images read wrong), loss ${result.loss.toFixed(4)}.`;
  $(".inspect-grid").hidden = false;
  showClasses(result.classes);
  showConfusion(result.confusion_matrix, result.classes);
  showMistakes(result.mistakes, result.classes);
  buildNetwork(result.layers);
  resetPad();
  showWeights(run);
}

const isDigits = (classes) => classes.every((name, i) => name === String(i));

function showClasses(classes) {
  // The run's classes: digits, or names (Fashion-MNIST's garments) that need wider labels.
  const named = !isDigits(classes);
  $("#pad-title").textContent = named ? "Draw a piece of clothing" : "Draw a digit";
  $("#pad").setAttribute("aria-label", `Drawing area: draw one ${named ? "piece of clothing" : "digit"}`);
  $$("#inspect .noun").forEach((span) => { span.textContent = named ? "class" : "digit"; });
  $("#probabilities").classList.toggle("named", named);
  $("#drawn-digit").classList.toggle("named", named);
  $$("#probabilities .label").forEach((label, i) => { label.textContent = classes[i]; });
}

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function showConfusion(matrix, classes) {
  const table = $("#confusion");
  const named = !isDigits(classes);
  const names = classes.map(escapeHtml);
  const header = "<tr><th></th>" + matrix.map((_, j) =>
    `<th scope="col"${named ? ' class="name-col"' : ""}>${names[j]}</th>`).join("") + "</tr>";
  const rows = matrix.map((counts, i) => {
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return `<tr><th scope="row">${names[i]}</th>` + counts.map((count, j) => {
      const share = count / total;
      const color = i === j ? `rgb(36 99 235 / ${share})` : `rgb(217 72 15 / ${Math.min(1, share * 8)})`;
      return `<td style="background:${color}" class="${i === j ? "hit" : count ? "miss" : ""}">${count}</td>`;
    }).join("") + "</tr>";
  });
  table.innerHTML = header + rows.join("");
}

function showMistakes(mistakes, classes) {
  $("#mistakes").replaceChildren(...mistakes.map((mistake) => {
    const figure = document.createElement("figure");
    figure.innerHTML = `<img width="56" height="56" alt=""><figcaption></figcaption>`;
    figure.querySelector("img").src = mistake.image;
    figure.querySelector("img").alt = `test image ${mistake.index}, a ${classes[mistake.label]}`;
    figure.querySelector("figcaption").textContent = `${classes[mistake.label]} read as ` +
      `${classes[mistake.predicted]} (${(100 * mistake.probability).toFixed(0)}%)`;
    return figure;
  }));
}

// The network: the 28x28 image it saw, each layer's neurons as squares, coloured by their activations.
function buildNetwork(layers) {
  const network = $("#network");
  network.replaceChildren();
  for (const layer of layers) {
    const block = document.createElement("div");
    block.className = "layer";
    block.dataset.layer = layer.name;
    const title = layer.name === "input" ? "input: 28×28 pixels" : `${layer.name}: ${layer.units} ${layer.activation}`;
    block.innerHTML = `<div class="layer-title"></div><canvas></canvas><div class="peak"></div>`;
    block.querySelector(".layer-title").textContent = title;
    const canvas = block.querySelector("canvas");
    const columns = layer.name === "input" ? 28 : Math.min(layer.units, layer.units > 256 ? 64 : 16);
    const cell = layer.name === "input" ? 4 : layer.units > 256 ? 4 : 10;
    canvas.width = columns * cell;
    canvas.height = Math.ceil((layer.name === "input" ? 784 : layer.units) / columns) * cell;
    Object.assign(canvas.dataset, { columns, cell });
    network.append(block);
    paintLayer(block, null);
  }
}

function paintLayer(block, values) {
  // Squares coloured by activation over the layer's largest magnitude: orange above zero, blue below.
  const canvas = block.querySelector("canvas");
  const context = canvas.getContext("2d");
  const columns = Number(canvas.dataset.columns), cell = Number(canvas.dataset.cell);
  const count = (canvas.width / cell) * (canvas.height / cell);
  const peak = values ? Math.max(1e-9, ...values.map(Math.abs)) : 1;
  context.fillStyle = "#f0f2f6";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < (values ? values.length : count); i++) {
    const v = values ? values[i] / peak : 0;
    context.fillStyle = values ? (v >= 0 ? `rgb(230 119 0 / ${v})` : `rgb(36 99 235 / ${-v})`) : "#dde1ea";
    context.fillRect((i % columns) * cell + 0.5, Math.floor(i / columns) * cell + 0.5, cell - 1, cell - 1);
  }
  block.querySelector(".peak").textContent = values ? `largest ${Math.max(...values.map(Math.abs)).toFixed(3)}` : "";
}

// ---------------------------------------------------------------- drawing a digit

const pad = { drawing: false, last: null, inked: false, generation: 0, inFlight: false, pending: false, lastSent: -Infinity,
  timer: null };

function resetPad() {
  const canvas = $("#pad");
  const context = canvas.getContext("2d");
  pad.generation++;
  Object.assign(pad, { inked: false, pending: false });
  clearTimeout(pad.timer);
  pad.timer = null;
  context.fillStyle = "#000"; // opaque black: the PNG sent is exactly what the user sees
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = context.fillStyle = "#fff";
  context.lineWidth = PEN_WIDTH;
  context.lineCap = context.lineJoin = "round";
  showAnswer(null);
}

function padPosition(event) {
  const canvas = $("#pad");
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (canvas.width / box.width), y: (event.clientY - box.top) * (canvas.height / box.height) };
}

function setUpPad() {
  const canvas = $("#pad");
  const context = canvas.getContext("2d");
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    Object.assign(pad, { drawing: true, inked: true, last: padPosition(event) });
    context.beginPath();
    context.arc(pad.last.x, pad.last.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
    context.fill();
    requestAnswer();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!pad.drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const point = padPosition(e);
      context.beginPath();
      context.moveTo(pad.last.x, pad.last.y);
      context.lineTo(point.x, point.y);
      context.stroke();
      pad.last = point;
    }
    requestAnswer();
  });
  const end = () => { if (pad.drawing) { pad.drawing = false; requestAnswer(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("#clear").addEventListener("click", resetPad);
  const bars = $("#probabilities");
  for (let i = 0; i < 10; i++) {
    const row = document.createElement("li");
    row.innerHTML = `<span class="label">${i}</span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
    bars.append(row);
  }
}

function markBusy() {
  // aria-busy: whether the answer shown is for the drawing as it is now (assistive technology and tests read it).
  $("#probabilities").setAttribute("aria-busy", String(pad.inFlight || pad.pending || pad.timer !== null));
}

function requestAnswer() {
  // One request at a time, at most every THROTTLE_MS; the last drawing is always sent.
  if (!pad.inked || !state.selected) return;
  if (pad.inFlight) pad.pending = true;
  else {
    const wait = pad.lastSent + THROTTLE_MS - performance.now();
    if (wait <= 0) sendDrawing();
    else if (pad.timer === null) pad.timer = setTimeout(() => { pad.timer = null; requestAnswer(); }, wait);
  }
  markBusy();
}

async function sendDrawing() {
  const generation = pad.generation;
  Object.assign(pad, { inFlight: true, pending: false, lastSent: performance.now() });
  const image = $("#pad").toDataURL("image/png");
  const answer = await api(`/api/runs/${encodeURIComponent(state.selected)}/draw`, { method: "POST", body: { image } });
  pad.inFlight = false;
  if (generation === pad.generation) {
    if (answer.ok) showAnswer(answer.data);
    else $("#drawn-confidence").textContent = answer.data.detail || `error ${answer.status}`;
  }
  if (pad.pending) requestAnswer();
  markBusy();
}

function showAnswer(answer) {
  const probabilities = answer ? answer.probabilities : new Array(10).fill(0);
  $("#drawn-digit").textContent = answer ? answer.class : "?";
  $("#drawn-confidence").textContent = answer ? `${(100 * answer.probability).toFixed(1)}% sure` : "draw to begin";
  $$("#probabilities li").forEach((row, i) => {
    row.querySelector(".fill").style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    row.querySelector(".value").textContent = answer ? `${(100 * probabilities[i]).toFixed(1)}%` : "";
    row.classList.toggle("top", answer !== null && i === answer.label);
  });
  const blocks = $$("#network .layer");
  if (!blocks.length) return;
  paintInput(blocks[0], answer ? answer.preprocessed : null);
  blocks.slice(1).forEach((block, i) => paintLayer(block, answer && answer.layers[i] ? answer.layers[i].values : null));
  markBusy();
}

function paintInput(block, dataUrl) {
  const canvas = block.querySelector("canvas");
  const context = canvas.getContext("2d");
  if (!dataUrl) {
    paintLayer(block, null);
    return;
  }
  const image = new Image();
  image.onload = () => {
    context.imageSmoothingEnabled = false;
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
  };
  image.src = dataUrl;
}

// ---------------------------------------------------------------- first-layer weights

const weights = { run: null, neurons: 0, values: null, columns: 0, layer: "" };
const TILE = 28, GAP = 2;

async function showWeights(run) {
  $("#neuron-view").hidden = true;
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/weights`);
  if (!answer.ok || state.selected !== run) return;
  const bytes = Uint8Array.from(atob(answer.data.weights), (c) => c.charCodeAt(0));
  Object.assign(weights, { run, neurons: answer.data.neurons, values: new Int8Array(bytes.buffer),
    columns: Math.ceil(Math.sqrt(answer.data.neurons)), layer: answer.data.layer });
  const canvas = $("#weights-grid");
  const rows = Math.ceil(weights.neurons / weights.columns);
  canvas.width = weights.columns * (TILE + GAP) - GAP;
  canvas.height = rows * (TILE + GAP) - GAP;
  const context = canvas.getContext("2d");
  for (let n = 0; n < weights.neurons; n++) {
    context.putImageData(neuronPixels(context, n), (n % weights.columns) * (TILE + GAP), Math.floor(n / weights.columns) * (TILE + GAP));
  }
}

function neuronPixels(context, n) {
  // A neuron's 784 weights as a 28x28 picture: red positive, blue negative, white zero.
  const image = context.createImageData(TILE, TILE);
  for (let p = 0; p < 784; p++) {
    const v = weights.values[n * 784 + p] / 127;
    const fade = Math.round(255 * (1 - Math.abs(v)));
    const [r, g, b] = v >= 0 ? [255, fade, fade] : [fade, fade, 255];
    image.data.set([r, g, b, 255], p * 4);
  }
  return image;
}

function openNeuron(event) {
  const canvas = $("#weights-grid");
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width);
  const y = (event.clientY - box.top) * (canvas.height / box.height);
  const n = Math.floor(y / (TILE + GAP)) * weights.columns + Math.floor(x / (TILE + GAP));
  if (!weights.values || n < 0 || n >= weights.neurons) return;
  const large = $("#neuron-large");
  const context = large.getContext("2d");
  const small = document.createElement("canvas");
  small.width = small.height = TILE;
  small.getContext("2d").putImageData(neuronPixels(context, n), 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(small, 0, 0, large.width, large.height);
  $("#neuron-title").textContent = `${weights.layer}, neuron ${n + 1} of ${weights.neurons}: its 784 incoming weights`;
  $("#neuron-view").hidden = false;
}

// ---------------------------------------------------------------- start

function start() {
  addLayer(128);
  $("#add-layer").addEventListener("click", () => addLayer(64));
  $("#train-form").addEventListener("submit", train);
  $("#train-form").addEventListener("input", formChanged);
  $("#stop").addEventListener("click", () => state.current && stopRun(state.current.run));
  $$("#runs-table th[data-key]").forEach((th) => th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "run" };
    renderRuns();
  }));
  $("#scatter-x").addEventListener("change", drawScatter);
  $("#scatter-dataset").addEventListener("change", drawScatter);
  $("#overlay-metric").addEventListener("change", drawOverlay);
  $("#weights-grid").addEventListener("click", openNeuron);
  $("#train-form").elements.train_size.placeholder = `all ${TRAINING_IMAGES.toLocaleString("en")}`;
  setUpPad();
  drawLiveCharts();
  listen();
}

start();
