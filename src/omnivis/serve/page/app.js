// The omnivis page: choose an image and a task, give the task's input, run, see the answer drawn.
// No build step: plain browser JavaScript against the same server's /v1 API.
"use strict";

const MAX_SIDE = 640; // the picture is shown at most this many CSS pixels on its long side
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

const state = { file: null, image: null, scale: 1, tasks: {}, region: null, drag: null };
const $ = (id) => document.getElementById(id);

async function loadTasks() {
  const response = await fetch("/v1/tasks");
  const select = $("task");
  for (const task of await response.json()) {
    state.tasks[task.task] = task;
    const option = document.createElement("option");
    option.value = task.task;
    option.textContent = task.task;
    select.appendChild(option);
  }
  showInputs();
}

function showInputs() {
  const task = state.tasks[$("task").value];
  if (!task) return;
  $("task-help").textContent = task.description;
  $("text-row").hidden = task.input !== "text";
  $("region-row").hidden = task.input !== "region";
  clearOverlay();
  drawRegion();
  updateRunButton();
}

function updateRunButton() {
  const task = state.tasks[$("task").value];
  const ready = state.image && task && (task.input !== "region" || state.region);
  $("run").disabled = !ready;
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  state.region = null;
  $("region-value").textContent = "";
  const image = new Image();
  image.onload = () => {
    state.image = image;
    state.scale = Math.min(1, MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    const width = Math.round(image.naturalWidth * state.scale);
    const height = Math.round(image.naturalHeight * state.scale);
    for (const canvas of [$("picture"), $("overlay")]) {
      canvas.width = width;
      canvas.height = height;
    }
    $("picture").getContext("2d").drawImage(image, 0, 0, width, height);
    clearOverlay();
    setStatus("");
    updateRunButton();
  };
  image.onerror = () => setStatus("this file is not an image the browser can show", true);
  image.src = URL.createObjectURL(file);
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function clearOverlay() {
  const canvas = $("overlay");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.shapes = "0";
}

// ----- the region of region tasks: dragged on the overlay, kept in image pixels -----

function eventPoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  return [(event.clientX - rect.left) / state.scale, (event.clientY - rect.top) / state.scale];
}

function drawRegion() {
  const task = state.tasks[$("task").value];
  if (!state.region || !task || task.input !== "region") return;
  const [x0, y0, x1, y1] = state.region;
  const context = $("overlay").getContext("2d");
  context.setLineDash([6, 4]);
  context.strokeStyle = "#2f6fde";
  context.lineWidth = 2;
  context.strokeRect(x0 * state.scale, y0 * state.scale, (x1 - x0) * state.scale, (y1 - y0) * state.scale);
  context.setLineDash([]);
}

function onPointerDown(event) {
  const task = state.tasks[$("task").value];
  if (!state.image || !task || task.input !== "region") return;
  state.drag = eventPoint(event);
}

function onPointerMove(event) {
  if (!state.drag) return;
  const [x, y] = eventPoint(event);
  const [sx, sy] = state.drag;
  const clamp = (value, limit) => Math.max(0, Math.min(limit, value));
  const width = state.image.naturalWidth, height = state.image.naturalHeight;
  state.region = [clamp(Math.min(sx, x), width), clamp(Math.min(sy, y), height),
                  clamp(Math.max(sx, x), width), clamp(Math.max(sy, y), height)];
  clearOverlay();
  drawRegion();
}

function onPointerUp() {
  if (!state.drag) return;
  state.drag = null;
  if (state.region && (state.region[2] - state.region[0] < 1 || state.region[3] - state.region[1] < 1)) {
    state.region = null;
  }
  $("region-value").textContent = state.region ? `(${state.region.map((v) => Math.round(v)).join(", ")})` : "";
  updateRunButton();
}

// ----- running a task and drawing its answer -----

async function run() {
  const task = $("task").value;
  const form = new FormData();
  form.append("image", state.file);
  form.append("task", task);
  const input = state.tasks[task].input;
  if (input === "text") form.append("text", $("text").value);
  if (input === "region") form.append("region", state.region.join(","));
  $("run").disabled = true;
  setStatus("running…");
  try {
    const response = await fetch("/v1/predict", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      setStatus(`error ${response.status}: ${body.detail ? JSON.stringify(body.detail) : "unknown"}`, true);
      return;
    }
    $("json").textContent = JSON.stringify(body.result, null, 2);
    showAnswer(body.result[task]);
    setStatus("done");
  } catch (error) {
    setStatus(`the request failed: ${error}`, true);
  } finally {
    updateRunButton();
  }
}

// Every shape an answer holds, whatever the task: boxes, quadrilaterals and polygons, each with its label.
function shapesOf(answer) {
  const shapes = [];
  if (!answer || typeof answer !== "object") return shapes;
  (answer.bboxes || []).forEach((box, index) => {
    const [x0, y0, x1, y1] = box;
    shapes.push({ points: [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                  label: (answer.labels || answer.bboxes_labels || [])[index] || "" });
  });
  (answer.quad_boxes || []).forEach((quad, index) => {
    const points = [];
    for (let k = 0; k + 1 < quad.length; k += 2) points.push([quad[k], quad[k + 1]]);
    shapes.push({ points, label: (answer.labels || [])[index] || "" });
  });
  (answer.polygons || []).forEach((parts, index) => {
    for (const flat of parts) {
      const points = [];
      for (let k = 0; k + 1 < flat.length; k += 2) points.push([flat[k], flat[k + 1]]);
      if (points.length >= 3) {
        shapes.push({ points, label: (answer.labels || answer.polygons_labels || [])[index] || "" });
      }
    }
  });
  return shapes;
}

function showAnswer(answer) {
  clearOverlay();
  drawRegion();
  $("answer-text").textContent = typeof answer === "string" ? answer : "";
  const shapes = shapesOf(answer);
  const context = $("overlay").getContext("2d");
  context.lineWidth = 2;
  context.lineCap = "round"; // a degenerate box (a line or a point) still shows
  context.lineJoin = "round";
  context.font = "13px system-ui, sans-serif";
  shapes.forEach((shape, index) => {
    const colour = COLOURS[index % COLOURS.length];
    context.strokeStyle = colour;
    context.beginPath();
    shape.points.forEach(([x, y], k) => {
      const px = x * state.scale, py = y * state.scale;
      if (k === 0) context.moveTo(px, py); else context.lineTo(px, py);
    });
    context.closePath();
    context.stroke();
    if (shape.label) {
      const [x, y] = shape.points[0];
      const width = context.measureText(shape.label).width + 6;
      context.fillStyle = colour;
      context.fillRect(x * state.scale, Math.max(0, y * state.scale - 16), width, 16);
      context.fillStyle = "#fff";
      context.fillText(shape.label, x * state.scale + 3, Math.max(12, y * state.scale - 4));
    }
  });
  $("overlay").dataset.shapes = String(shapes.length);
}

// ----- wiring -----

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("task").addEventListener("change", showInputs);
  $("run").addEventListener("click", run);
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  window.addEventListener("pointerup", onPointerUp);
  loadTasks().catch((error) => setStatus(`cannot list the tasks: ${error}`, true));
}

setUp();
