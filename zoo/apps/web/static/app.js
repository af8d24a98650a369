// The search page: query by example over a zoo index. Plain JavaScript, no build step.
// Talks to the JSON API in zoo/apps/web/app.py; every image the page shows comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE_MIN_SIDE = 128;  // pixels: smaller uploads are taken as a crop of one mark

const state = {
  info: null,          // GET /api/info
  queryBlob: null,     // the query image: an upload, or an archive item fetched as a blob
  queryName: "",
  queryItem: null,     // archive item id when the query image is an archive item
  bitmap: null,        // decoded query image for drawing and cropping (null: browser cannot)
  box: null,           // {x, y, w, h} in image pixels, drawn by the user
  crop: null,          // {key, blob, url}: the boxed region as PNG
  overlay: null,       // locate result: {heat: ImageBitmap, boxes: [...]}
  pageView: null,      // region index, the viewer's page: {item, box: {x, y, w, h} | null}
  view: "idle",        // "search" | "browse"
  offset: 0,
  results: [],
  requestSeq: 0,       // newer requests win; stale answers are dropped
  searchesShown: 0,    // result grids drawn so far
};

// ---- small helpers -------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "error" ? "message" : "message info";
  box.hidden = !text;
}

function clearMessage() { showMessage(""); }

async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error("The server did not answer (" + error.message + "). Is `zoo web` still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const detail = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(detail);
  }
  return body;
}

function options() {
  return {
    model: $("model-select").value,
    mode: document.querySelector('input[name="mode"]:checked').value,
    k: parseInt($("page-size").value, 10),
  };
}

function isRegionIndex() {
  // The index's items are page photographs and its hits pages with boxes (zoo/apps/index/regions.py).
  return state.info.kind === "regions";
}

function scoreText(score, mode) {
  return mode === "hamming" ? `Hamming distance ${score}` : `similarity ${Number(score).toFixed(3)}`;
}

function humanBytes(bytes) {
  if (bytes >= 1 << 20) return (bytes / (1 << 20)).toFixed(1) + " MB";
  if (bytes >= 1 << 10) return (bytes / (1 << 10)).toFixed(0) + " KB";
  return bytes + " bytes";
}

// ---- start up ------------------------------------------------------------------------------

async function init() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    $("summary").textContent = "The index could not be loaded.";
    showMessage(error.message);
    return;
  }
  const info = state.info;
  const size = isRegionIndex()
    ? `${info.pages.toLocaleString()} pages (${info.regions.toLocaleString()} marked regions)`
    : `${info.items.toLocaleString()} items`;
  $("summary").textContent = `${size} in ${info.name}; models: ${info.models.join(", ")}`;
  if (isRegionIndex()) {
    $("results").classList.add("pages");
    $("browse").textContent = "Browse the pages";
    $("results-status").textContent = "Choose an image of a mark to find the pages it is on, " +
      "or browse the pages and draw a box around a mark on one.";
  }
  for (const model of info.models) {
    const option = document.createElement("option");
    option.value = option.textContent = model;
    $("model-select").append(option);
  }
  if (![...$("page-size").options].some((option) => option.value === String(info.page_size))) {
    $("page-size").prepend(new Option(String(info.page_size)));
  }
  $("page-size").value = String(info.page_size);

  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setQueryFile(file, file.name, null);
    event.target.value = "";  // choosing the same file again still fires "change"
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) setQueryFile(file, file.name, null);
  });
  // dropping outside the zone must not navigate away from the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  $("model-select").addEventListener("change", rerun);
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", rerun);
  $("page-size").addEventListener("change", rerun);
  $("browse").addEventListener("click", () => browse(0));
  $("previous-page").addEventListener("click", () => turnPage(-1));
  $("next-page").addEventListener("click", () => turnPage(1));
  $("whole-image").addEventListener("click", () => { state.box = null; drawQuery(); search(0); });
  $("locate-box").addEventListener("click", () => locate({box: state.box}));
  $("clear-overlay").addEventListener("click", () => { state.overlay = null; $("clear-overlay").hidden = true; drawQuery(); });
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer-search-box").addEventListener("click", searchWithPageBox);
  setUpBoxDrawing($("query-canvas"), {
    size: () => state.bitmap,
    getBox: () => state.box,
    setBox: (box) => { state.box = box; },
    redraw: drawQuery,
    drawn: () => search(0),
    submit: () => search(0),
  });
  setUpBoxDrawing($("viewer-frame"), {
    size: () => state.pageView && state.pageView.item,
    getBox: () => state.pageView.box,
    setBox: (box) => { state.pageView.box = box; },
    redraw: drawPageBox,
    drawn: () => {},
    submit: searchWithPageBox,
  });
  window.addEventListener("resize", drawQuery);
}

function rerun() {
  if (state.view === "search") search(0);
  else if (state.view === "browse") browse(state.offset);
}

function turnPage(direction) {
  const k = options().k;
  const offset = Math.max(0, state.offset + direction * k);
  if (state.view === "browse") browse(offset); else search(offset);
}

// ---- the query image -----------------------------------------------------------------------

async function setQueryFile(blob, name, itemId, box = null) {
  clearMessage();
  const limit = state.info.max_upload_bytes;
  if (itemId === null && blob.size > limit) {
    showMessage(`${name} is ${humanBytes(blob.size)}; the largest upload accepted is ${humanBytes(limit)}. ` +
                "Crop or downscale the image and try again.");
    return;
  }
  if (itemId === null && blob.size === 0) {
    showMessage(`${name} is empty (0 bytes); choose an image file.`);
    return;
  }
  state.queryBlob = blob;
  state.queryName = name;
  state.queryItem = itemId;
  state.box = box;
  state.crop = null;
  state.overlay = null;
  $("clear-overlay").hidden = true;
  try {
    state.bitmap = await createImageBitmap(blob);
  } catch (error) {
    state.bitmap = null;  // e.g. TIFF: the server decodes it, the page cannot draw it
  }
  $("query-figure").hidden = !state.bitmap;
  $("query-tools").hidden = !state.bitmap;
  $("query-caption").textContent = itemId === null ? name
    : `${name} (${isRegionIndex() ? "page" : "archive item"} ${itemId})`;
  $("query-canvas").setAttribute("aria-label", `The query image: ${name}. Draw a box to search part of it.`);
  drawQuery();
  await search(0);
}

async function useItemAsQuery(item, box = null) {
  if ($("viewer").open) $("viewer").close();
  let blob;
  try {
    const response = await fetch(item.image);
    if (!response.ok) throw new Error((await response.json()).error);
    blob = await response.blob();
  } catch (error) {
    showMessage(`Archive item ${item.id} cannot be shown: ${error.message}`);
    return;
  }
  await setQueryFile(blob, item.name, item.id, box);
}

function drawQuery() {
  const canvas = $("query-canvas");
  const bitmap = state.bitmap;
  if (!bitmap) return;
  const maxWidth = Math.max(120, canvas.parentElement.clientWidth || 320);
  const maxHeight = 480;
  const scale = Math.min(maxWidth / bitmap.width, maxHeight / bitmap.height, 4);
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  if (state.overlay) {
    context.globalAlpha = 0.55;
    context.drawImage(state.overlay.heat, 0, 0, canvas.width, canvas.height);
    context.globalAlpha = 1;
    context.lineWidth = 2;
    context.font = "12px sans-serif";
    state.overlay.boxes.forEach((found, index) => {
      context.strokeStyle = index === 0 ? "#00c853" : "#2979ff";
      context.strokeRect(found.x * scale, found.y * scale, found.w * scale, found.h * scale);
      context.fillStyle = context.strokeStyle;
      context.fillText(`${index + 1}: ${found.score.toFixed(2)}`, found.x * scale + 2, Math.max(11, found.y * scale - 3));
    });
  }
  if (state.box) {
    const b = state.box;
    context.setLineDash([6, 4]);
    context.lineWidth = 2;
    context.strokeStyle = "#ff6d00";
    context.strokeRect(b.x * scale, b.y * scale, b.w * scale, b.h * scale);
    context.setLineDash([]);
  }
  $("whole-image").hidden = isIndexedPage();  // a page of a region index is searched by a box
  $("locate-box").hidden = !isPagePhoto() || !state.info.locate;
  $("locate-box").disabled = !state.box;
  $("locate-box").title = state.box ? "" : "Draw a box around a mark first";
}

function isPagePhoto() {
  // An uploaded image large enough to hold several marks: locate can search it.
  return Boolean(state.bitmap) && state.queryItem === null &&
    Math.min(state.bitmap.width, state.bitmap.height) >= PAGE_MIN_SIDE;
}

function isIndexedPage() {
  // The query is a page of a region index (searched with a box drawn on it, by its id).
  return isRegionIndex() && state.queryItem !== null;
}

function setUpBoxDrawing(element, target) {
  // Draw a box on `element` (the query canvas, or a page in the viewer) with the pointer or
  // the keyboard. `target`: size() -> the image's {width, height} (null: nothing to draw on),
  // getBox() and setBox(box) in image pixels, redraw(), drawn() when a box is let go,
  // submit() on Enter.
  let start = null;
  const toImage = (event) => {
    const rect = element.getBoundingClientRect();
    const size = target.size();
    const scale = element.clientWidth / size.width;  // screen pixels per image pixel
    return {
      x: Math.min(Math.max((event.clientX - rect.left - element.clientLeft) / scale, 0), size.width),
      y: Math.min(Math.max((event.clientY - rect.top - element.clientTop) / scale, 0), size.height),
      scale,
    };
  };
  element.addEventListener("pointerdown", (event) => {
    if (!target.size()) return;
    start = toImage(event);
    element.setPointerCapture(event.pointerId);
  });
  element.addEventListener("pointermove", (event) => {
    if (!start) return;
    target.setBox(boxFrom(start, toImage(event)));
    target.redraw();
  });
  element.addEventListener("pointerup", (event) => {
    if (!start) return;
    const point = toImage(event);
    const box = boxFrom(start, point);
    const tiny = box.w * point.scale < 6 || box.h * point.scale < 6;
    start = null;
    target.setBox(tiny ? null : box);
    target.redraw();
    if (!tiny) target.drawn();
  });
  element.addEventListener("keydown", (event) => {
    const size = target.size();
    if (!size) return;
    const width = size.width, height = size.height;
    const step = Math.max(1, Math.round(Math.max(width, height) / 50));
    const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
    if (event.key in moves) {
      event.preventDefault();
      const b = target.getBox();
      if (!b) {
        target.setBox({x: Math.round(width / 3), y: Math.round(height / 3),
                       w: Math.round(width / 3), h: Math.round(height / 3)});
      } else {
        const [dx, dy] = moves[event.key];
        if (event.shiftKey) {
          b.w = Math.min(Math.max(step, b.w + dx), width - b.x);
          b.h = Math.min(Math.max(step, b.h + dy), height - b.y);
        } else {
          b.x = Math.min(Math.max(0, b.x + dx), width - b.w);
          b.y = Math.min(Math.max(0, b.y + dy), height - b.h);
        }
      }
      target.redraw();
    } else if (event.key === "Enter") {
      event.preventDefault();
      target.submit();
    } else if (event.key === "Escape" && target.getBox()) {
      event.preventDefault();
      target.setBox(null);
      target.redraw();
    }
  });
}

function boxFrom(a, b) {
  const x = Math.round(Math.min(a.x, b.x)), y = Math.round(Math.min(a.y, b.y));
  return {x, y, w: Math.round(Math.max(a.x, b.x)) - x, h: Math.round(Math.max(a.y, b.y)) - y};
}

function boxParam(box) {
  return `${box.x},${box.y},${box.w},${box.h}`;
}

async function cropBlob() {
  // The boxed region at full resolution, as PNG: what a search with a box sends.
  const b = state.box;
  const key = boxParam(b);
  if (state.crop && state.crop.key === key) return state.crop.blob;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, b.w);
  canvas.height = Math.max(1, b.h);
  canvas.getContext("2d").drawImage(state.bitmap, b.x, b.y, b.w, b.h, 0, 0, b.w, b.h);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  if (state.crop) URL.revokeObjectURL(state.crop.url);
  state.crop = {key, blob, url: URL.createObjectURL(blob)};
  return blob;
}

// ---- search, browse, locate ----------------------------------------------------------------

async function search(offset) {
  if (!state.queryBlob) return;
  if (isIndexedPage() && !state.box) {
    showMessage(`Draw a box around a mark on ${state.queryName} to search the archive with it.`, "info");
    $("results-status").textContent = "Draw a box on the page to search.";
    return;
  }
  const seq = ++state.requestSeq;
  const {model, mode, k} = options();
  const params = new URLSearchParams({model, mode, k: String(k), offset: String(offset),
                                      thumbnails: "inline"});
  clearMessage();
  $("results-status").textContent = "Searching…";
  const started = performance.now();
  let answer;
  try {
    if (isIndexedPage()) {  // the server crops the box from the page file it indexed
      params.set("item", String(state.queryItem));
      params.set("box", boxParam(state.box));
      answer = await api("/api/search?" + params);
    } else if (state.box && state.bitmap) {
      answer = await api("/api/search?" + params, {method: "POST", body: await cropBlob()});
    } else if (state.queryItem !== null) {
      params.set("item", String(state.queryItem));
      answer = await api("/api/search?" + params);
    } else {
      answer = await api("/api/search?" + params, {method: "POST", body: state.queryBlob,
                                                    headers: {"Content-Type": state.queryBlob.type || "application/octet-stream"}});
    }
  } catch (error) {
    if (seq !== state.requestSeq) return;
    showMessage(`${state.queryName}: ${error.message}`);
    $("results-status").textContent = "The search did not run.";
    return;
  }
  if (seq !== state.requestSeq) return;
  state.view = "search";
  state.offset = offset;
  renderGrid(answer.hits, answer.has_more, (hit) => ({
    rank: hit.rank,
    score: scoreText(hit.score, mode) + (mode === "hamming" ? ` / ${answer.bits} bits` : ""),
    places: hit.boxes ? hit.boxes.length : 0,
  }));
  const elapsed = Math.round(performance.now() - started);
  $("results-status").textContent =
    `${isRegionIndex() ? "Pages" : "Matches"} ${offset + 1}–${offset + answer.hits.length} ` +
    `by ${mode === "hamming" ? "Hamming distance" : "embedding similarity"} ` +
    `(${model}), ${elapsed} ms.`;
  state.searchesShown += 1;
  document.body.dataset.searchDone = String(state.searchesShown);  // for tests and benchmarks
}

async function browse(offset) {
  const seq = ++state.requestSeq;
  const k = options().k;
  clearMessage();
  let answer;
  try {
    answer = await api(`/api/items?offset=${offset}&limit=${k}&thumbnails=inline`);
  } catch (error) {
    if (seq === state.requestSeq) showMessage(error.message);
    return;
  }
  if (seq !== state.requestSeq) return;
  state.view = "browse";
  state.offset = offset;
  renderGrid(answer.items, offset + answer.items.length < answer.total, null);
  $("results-status").textContent = isRegionIndex()
    ? `Pages ${offset + 1}–${offset + answer.items.length} of ${answer.total}: open one and draw a box around a mark to search with it.`
    : `Archive items ${offset + 1}–${offset + answer.items.length} of ${answer.total}: pick one to search with it.`;
}

async function locate(what) {
  if (!isPagePhoto()) return;
  clearMessage();
  const params = new URLSearchParams({model: options().model});
  if (what.item !== undefined) params.set("item", String(what.item));
  if (what.box) params.set("box", boxParam(what.box));
  showMessage("Locating on the page…", "info");
  let answer;
  try {
    answer = await api("/api/locate?" + params, {method: "POST", body: state.queryBlob});
    const heat = new Image();  // a data: URL; images may load it, fetch may not (CSP)
    heat.src = answer.heatmap;
    await heat.decode();
    state.overlay = {heat, boxes: answer.boxes};
  } catch (error) {
    showMessage(error.message);
    return;
  }
  clearMessage();
  $("clear-overlay").hidden = false;
  drawQuery();
  const best = answer.boxes[0];
  $("query-caption").textContent = best
    ? `${state.queryName}: ${answer.boxes.length} candidate place(s); best score ${best.score.toFixed(2)} ` +
      `at x ${best.x}, y ${best.y} (${best.w}×${best.h} px).`
    : `${state.queryName}: nothing found.`;
  $("query-canvas").focus();
}

// ---- the grid and the viewer ---------------------------------------------------------------

function metadataEntries(item, all = false) {
  // The archive's own metadata (a sidecar or metadata.csv: `user`) first, then the file's.
  const meta = item.metadata || {};
  const entries = [];
  for (const [key, value] of Object.entries(meta.user || {})) {
    entries.push([key, typeof value === "object" ? JSON.stringify(value) : String(value)]);
  }
  if (meta.width && meta.height) entries.push(["size", `${meta.width}×${meta.height} px`]);
  if (all) {
    if (meta.file_size) entries.push(["file size", humanBytes(meta.file_size)]);
    if (meta.mtime) entries.push(["modified", meta.mtime]);
  }
  return entries;
}

function fillMetadata(list, entries) {
  list.replaceChildren();
  for (const [key, value] of entries) {
    const term = document.createElement("dt");
    term.textContent = key;
    const detail = document.createElement("dd");
    detail.textContent = value;
    list.append(term, detail);
  }
}

function renderGrid(items, hasMore, describe) {
  const grid = $("results");
  grid.replaceChildren();
  state.results = items;
  items.forEach((item, index) => {
    const card = document.createElement("li");
    card.className = "card" + (describe && index === 0 && state.offset === 0 ? " best" : "");
    card.dataset.itemId = String(item.id);

    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    const thumbnail = item.thumbnail_data || item.thumbnail;  // inline when the server had it at hand
    if (item.width && item.height) {  // a page: its best box (a hit's) drawn over it
      const frame = document.createElement("div");
      frame.style.width = `${100 * Math.min(1, item.width / item.height)}%`;  // fit the square
      showPage(frame, item, thumbnail, item.box ? [item.boxes[0]] : [], false);
      open.classList.add("page-thumbnail");
      open.append(frame);
    } else {
      const image = document.createElement("img");
      image.src = thumbnail;
      image.alt = `Archive item ${item.id}: ${item.name}`;
      image.decoding = "async";
      open.append(image);
    }
    if (describe) {
      open.setAttribute("aria-label", `Open match ${item.rank}: ${item.name}`);
      open.addEventListener("click", () => openViewer(item));
    } else if (isRegionIndex()) {
      open.setAttribute("aria-label", `Open page ${item.name} to draw a box on it`);
      open.addEventListener("click", () => openViewer(item));
    } else {
      open.setAttribute("aria-label", `Search with ${item.name}`);
      open.addEventListener("click", () => useItemAsQuery(item));
    }
    card.append(open);

    if (describe) {
      const facts = describe(item);
      const line = document.createElement("div");
      line.innerHTML = '<span class="rank"></span> <span class="score"></span>';
      line.querySelector(".rank").textContent = `#${facts.rank}`;
      line.querySelector(".score").textContent = facts.score;
      card.append(line);
      if (facts.places > 1) {
        const places = document.createElement("span");
        places.className = "places";
        places.textContent = `${facts.places} matching places on the page`;
        card.append(places);
      }
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.name;
    card.append(name);
    const entries = metadataEntries(item).slice(0, 3);
    if (entries.length) {
      const list = document.createElement("dl");
      list.className = "metadata";
      fillMetadata(list, entries);
      card.append(list);
    }
    if (item.box) {  // a page hit: search again with the mark found on it
      card.append(useButton("Search with this mark", `Search with the mark boxed on ${item.name}`,
                            () => useItemAsQuery(item, boxObject(item.box))));
    } else if (!isRegionIndex()) {
      card.append(useButton(describe ? "Use as query" : "Search with this", `Search with ${item.name}`,
                            () => useItemAsQuery(item)));
    }
    grid.append(card);
  });
  const k = options().k;
  $("pager").hidden = items.length === 0 && state.offset === 0;
  $("previous-page").disabled = state.offset === 0;
  $("next-page").disabled = !hasMore;
  $("page-label").textContent = items.length ? `Page ${Math.floor(state.offset / k) + 1}` : "No results";
}

function useButton(text, label, action) {
  const use = document.createElement("button");
  use.type = "button";
  use.className = "use secondary";
  use.textContent = text;
  use.setAttribute("aria-label", label);
  use.addEventListener("click", action);
  return use;
}

// ---- pages of a region index: boxes over the page ------------------------------------------

function boxObject([x, y, w, h]) {
  return {x, y, w, h};
}

function placeBox(element, page, box) {
  // Position `element` over `box` {x, y, w, h} (page pixels) of a page shown at any size.
  element.style.left = `${100 * box.x / page.width}%`;
  element.style.top = `${100 * box.y / page.height}%`;
  element.style.width = `${100 * box.w / page.width}%`;
  element.style.height = `${100 * box.h / page.height}%`;
}

function showPage(frame, page, src, boxes, labelled) {
  // `frame` shows `page` (an item with width and height) from the image `src`, with `boxes`
  // [[x, y, w, h, score], ...] over it: the first (the best) green, the others orange, with
  // their number and score when `labelled`. The frame keeps the page's proportions.
  frame.classList.add("frame", "page");
  frame.style.aspectRatio = `${page.width} / ${page.height}`;
  const image = frame.querySelector("img") || frame.appendChild(document.createElement("img"));
  image.src = src;
  image.alt = `Archive page ${page.id}: ${page.name}` + (page.box
    ? `, the best match boxed in green at x ${page.box[0]}, y ${page.box[1]}` : "");
  image.decoding = "async";
  image.draggable = false;
  const layer = frame.querySelector(".boxes") || frame.appendChild(document.createElement("div"));
  layer.className = "boxes";
  layer.setAttribute("aria-hidden", "true");  // the boxes are also given in words
  layer.replaceChildren();
  const mode = options().mode;
  boxes.forEach((box, index) => {
    const element = document.createElement("div");
    element.className = "hit-box" + (index === 0 ? " best" : "");
    placeBox(element, page, boxObject(box));
    if (labelled) {
      const label = document.createElement("span");
      label.className = "label" + (box[1] < 0.08 * page.height ? " below" : "");
      label.textContent = `${index + 1}: ${mode === "hamming" ? box[4] : box[4].toFixed(2)}`;
      element.append(label);
    }
    layer.append(element);
  });
}

function drawPageBox() {
  // The box drawn on the viewer's page (dashed), and the button that searches with it.
  const view = state.pageView;
  const layer = $("viewer-frame").querySelector(".boxes");
  let drawn = layer.querySelector(".drawn-box");
  if (view.box) {
    if (!drawn) drawn = layer.appendChild(document.createElement("div"));
    drawn.className = "drawn-box";
    placeBox(drawn, view.item, view.box);
  } else if (drawn) {
    drawn.remove();
  }
  const button = $("viewer-search-box");
  button.disabled = !view.box;
  button.title = view.box ? `Search with the box at x ${view.box.x}, y ${view.box.y} (${view.box.w}×${view.box.h} px)`
    : "Draw a box around a mark on the page first";
}

function searchWithPageBox() {
  const {item, box} = state.pageView || {};
  if (box) useItemAsQuery(item, {...box});
}

function openPageView(item, match) {
  // The viewer's page, large, with every matching box of a hit; a box can be drawn on it.
  const frame = $("viewer-frame");
  showPage(frame, item, item.image, item.boxes || [], true);
  frame.style.width = `min(100%, ${(58 * item.width / item.height).toFixed(2)}vh)`;
  frame.tabIndex = 0;  // draw a box with the keyboard too (setUpBoxDrawing)
  frame.setAttribute("role", "img");
  frame.setAttribute("aria-label", `${$("viewer-item").alt}. Draw a box around a mark with the ` +
                     "mouse, or with the arrow keys (Shift+arrows resize); Enter searches with it.");
  state.pageView = {item, box: null};
  drawPageBox();
  const list = $("viewer-box-list");
  list.replaceChildren(...(item.boxes || []).map(([x, y, w, h, score], index) => {
    const entry = document.createElement("li");
    entry.className = index === 0 ? "best" : "";
    entry.textContent = `${scoreText(score, options().mode)} at x ${x}, y ${y} (${w}×${h} px)`;
    return entry;
  }));
  list.hidden = !match;
  $("viewer-item-caption").textContent = match
    ? `${item.name}: ${item.boxes.length} matching place${item.boxes.length === 1 ? "" : "s"}, ` +
      `the best (green) ${scoreText(item.score, options().mode)}`
    : `${item.name}, ${item.width}×${item.height} px`;
}

async function openViewer(item) {
  const viewer = $("viewer");
  const match = item.rank !== undefined;  // a search hit, or a page picked while browsing
  const pages = isRegionIndex();
  $("viewer-title").textContent = match ? `Match ${item.rank}: ${item.name}` : `Page: ${item.name}`;
  viewer.classList.toggle("pages", pages);
  $("viewer-query-figure").hidden = !match;
  $("viewer-page-tools").hidden = !pages;
  const queryImage = $("viewer-query");
  if (state.box && state.bitmap) {
    await cropBlob();
    queryImage.src = state.crop.url;
  } else if (match) {
    if (queryImage.dataset.url) URL.revokeObjectURL(queryImage.dataset.url);
    queryImage.dataset.url = URL.createObjectURL(state.queryBlob);
    queryImage.src = queryImage.dataset.url;
  }
  queryImage.alt = `The query: ${state.queryName}${state.box ? " (boxed region)" : ""}`;
  if (pages) {
    openPageView(item, match);
  } else {
    const itemImage = $("viewer-item");
    itemImage.src = item.image;
    itemImage.alt = `Archive item ${item.id}: ${item.name}`;
    $("viewer-item-caption").textContent = `${item.name}, ${scoreText(item.score, options().mode)}`;
  }
  fillMetadata($("viewer-metadata"), [["archive item", String(item.id)], ["file", item.name],
                                      ...metadataEntries(item, true)]);
  $("viewer-use").hidden = pages;  // a page is searched with a box drawn on it
  $("viewer-use").onclick = () => useItemAsQuery(item);
  const canLocate = !pages && isPagePhoto() && state.info.locate;
  $("viewer-locate").hidden = !canLocate;
  $("viewer-locate").onclick = () => { viewer.close(); locate({item: item.id}); };
  viewer.showModal();
  (pages ? $("viewer-frame") : $("viewer-close")).focus();  // a page: ready to draw a box on
}

document.addEventListener("DOMContentLoaded", init);
