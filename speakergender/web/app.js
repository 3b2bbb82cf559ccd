// Speaker gender web page. Everything here talks to the server through its TF Serving-style
// REST API: POST /v1/models/NAME:predict with the classify_wav signature and WAV bytes in
// base64. Recordings are encoded as 16-bit PCM WAV in the page, so the server only ever
// receives WAV files.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { config: null, recorder: null, recordings: 0 };

  // --- small helpers ------------------------------------------------------------------------

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function svgElement(tag, attributes = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    return node;
  }

  const seconds = (value) => `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const megabytes = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;
  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // TF Serving writes NaN and Infinity as bare tokens, which JSON.parse rejects; they become
  // null here (outside strings only).
  function parseServingJson(text) {
    const cleaned = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g,
      (token) => (token.startsWith('"') ? token : "null"));
    return JSON.parse(cleaned);
  }

  function isWav(bytes) {
    const view = new Uint8Array(bytes, 0, Math.min(12, bytes.byteLength));
    const text = String.fromCharCode(...view);
    return text.startsWith("RIFF") && text.slice(8, 12) === "WAVE";
  }

  function base64(bytes) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(new Blob([bytes]));
    });
  }

  // --- WAV encoding ---------------------------------------------------------------------------

  // Float samples in [-1, 1] (one Float32Array per channel) -> a 16-bit PCM WAV file.
  function encodeWav(channels, sampleRate) {
    const count = channels.length;
    const frames = channels[0].length;
    const dataBytes = frames * count * 2;
    const buffer = new ArrayBuffer(44 + dataBytes);
    const view = new DataView(buffer);
    const ascii = (offset, text) => {
      for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
    };
    ascii(0, "RIFF");
    view.setUint32(4, 36 + dataBytes, true);
    ascii(8, "WAVE");
    ascii(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, count, true);
    view.setUint32(24, sampleRate, true);
    view.setUint32(28, sampleRate * count * 2, true);
    view.setUint16(32, count * 2, true);
    view.setUint16(34, 16, true);
    ascii(36, "data");
    view.setUint32(40, dataBytes, true);
    let offset = 44;
    for (let i = 0; i < frames; i++) {
      for (let c = 0; c < count; c++) {
        const sample = Math.max(-1, Math.min(1, channels[c][i] || 0));
        view.setInt16(offset, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
        offset += 2;
      }
    }
    return buffer;
  }

  // Formats other than WAV that the browser can decode, as a mono 16 kHz WAV file.
  async function decodeToWav(bytes) {
    const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    if (!Offline) throw new Error("this browser cannot decode audio; send a WAV file");
    const rate = state.config ? state.config.sample_rate : 16000;
    const context = new Offline(1, 1, rate);
    let decoded;
    try {
      decoded = await context.decodeAudioData(bytes.slice(0));
    } catch (error) {
      throw new Error("not a WAV file, and not a format this browser can decode");
    }
    const mono = new Float32Array(decoded.length);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const channel = decoded.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / decoded.numberOfChannels;
    }
    return encodeWav([mono], decoded.sampleRate);
  }

  // --- the API --------------------------------------------------------------------------------

  async function classify(wavBytes) {
    const name = state.config.model_name;
    const body = JSON.stringify({
      signature_name: "classify_wav",
      instances: [{ wav_bytes: { b64: await base64(wavBytes) } }],
    });
    const response = await fetch(`/v1/models/${encodeURIComponent(name)}:predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    const text = await response.text();
    let reply;
    try {
      reply = parseServingJson(text);
    } catch (error) {
      throw new Error(`the server answered ${response.status} ${response.statusText}`);
    }
    if (!response.ok || reply.error) {
      throw new Error(reply.error || `the server answered ${response.status}`);
    }
    return reply.predictions[0];
  }

  // --- results --------------------------------------------------------------------------------

  function addResult(title) {
    $("no-results").hidden = true;
    const item = element("li", { class: "result" },
      element("h3", { text: title }),
      element("p", { class: "pending", text: "Scoring…" }));
    $("results").prepend(item);
    return item;
  }

  function showError(item, message) {
    item.querySelector(".pending")?.remove();
    item.append(element("p", { class: "error", text: `Could not score it: ${message}` }));
    item.dataset.state = "error";
  }

  function showPrediction(item, prediction) {
    item.querySelector(".pending")?.remove();
    if (prediction.error) {
      showError(item, prediction.error);
      return;
    }
    const label = prediction.label;
    const probability = prediction.female_probability;
    const noSpeech = label === "no speech";
    const verdict = element("p", { class: "verdict" },
      element("span", { class: `label${noSpeech ? " no-speech" : ""}`, text: label }),
      noSpeech ? null : element("span", {
        class: "probability",
        text: `probability female ${probability === null ? "?" : probability.toFixed(3)} ` +
          "(calibrated)",
      }),
      element("span", { class: "duration", text: seconds(prediction.duration_seconds || 0) }));
    item.append(verdict);
    if (noSpeech) {
      item.append(element("p", {
        class: "note", text: "No speech: every window is silent or too quiet to score.",
      }));
    }
    if (prediction.windows_disagree) {
      item.append(element("p", {
        class: "note",
        text: "Windows disagree: parts of the recording score differently (several " +
          "speakers, or a voice between the two labels). The answer is their average.",
      }));
    }
    item.append(timeline(prediction));
    item.dataset.state = "done";
    item.dataset.label = label;
  }

  // Which windows were scored and their probabilities: a bar per window, placed on the
  // recording's time axis (window i starts at i x hop; each bar spans until the next starts),
  // its height the window's female probability; a pale band where the window was too quiet
  // to score.
  function timeline(prediction) {
    const config = state.config;
    const count = Math.max(1, prediction.window_count || 1);
    const logits = (prediction.window_logits || []).slice(0, count);
    const sounding = (prediction.window_sounding || []).slice(0, count);
    const threshold = config.threshold;
    const hop = config.hop_seconds;
    const duration = prediction.duration_seconds || 0;
    const total = Math.max(duration, count * hop, 1e-3);
    const width = 300;
    const height = 60;
    const probabilities = logits.map((x) => (x === null ? 0 : sigmoid(x)));
    const scored = sounding.filter(Boolean).length;
    const scoredProbabilities = probabilities.filter((_, i) => sounding[i]);
    const range = scoredProbabilities.length
      ? `; female probability ${Math.min(...scoredProbabilities).toFixed(2)} to ` +
        `${Math.max(...scoredProbabilities).toFixed(2)} across scored windows`
      : "";
    const svg = svgElement("svg", {
      viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `Timeline: ${count} window${count === 1 ? "" : "s"}, ${scored} scored${range}`,
    });
    svg.append(svgElement("rect", { class: "frame", x: 0, y: 0, width, height }));
    probabilities.forEach((p, i) => {
      const start = i * hop;
      const end = i === count - 1 ? total : (i + 1) * hop;
      const x = (start / total) * width;
      const barWidth = ((end - start) / total) * width;
      const gap = Math.min(1, barWidth * 0.1);
      // A window too quiet to score is a pale band the height of the chart: no probability.
      const barHeight = sounding[i] ? Math.max(1, p * height) : height;
      const bar = svgElement("rect", {
        class: `bar ${sounding[i] ? "scored" : "unscored"}`,
        x: (x + gap).toFixed(2),
        y: (height - barHeight).toFixed(2),
        width: Math.max(0.5, barWidth - 2 * gap).toFixed(2),
        height: barHeight.toFixed(2),
      });
      const title = svgElement("title");
      title.textContent = `window at ${start.toFixed(2)} s: female probability ` +
        `${p.toFixed(3)}${sounding[i] ? "" : " (too quiet, not scored)"}`;
      bar.append(title);
      svg.append(bar);
    });
    const y = (height - threshold * height).toFixed(2);
    svg.append(svgElement("line", { class: "threshold", x1: 0, x2: width, y1: y, y2: y }));
    return element("figure", { class: "timeline" }, svg,
      element("figcaption", {},
        element("span", { class: "axis" },
          element("span", { text: "0 s" }),
          element("span", { text: seconds(total) })),
        element("span", {
          class: "legend",
          text: `Bars: female probability of each ${config.window_seconds.toFixed(2)} s ` +
            `window, every ${hop.toFixed(2)} s (pale: too quiet, not scored). Dashes: the ` +
            `threshold, ${threshold.toFixed(2)}.`,
        })));
  }

  async function scoreBytes(item, wavBytes) {
    try {
      showPrediction(item, await classify(wavBytes));
    } catch (error) {
      showError(item, error.message || String(error));
    }
  }

  async function scoreFile(file) {
    const item = addResult(file.name);
    if (file.size > state.config.max_file_bytes) {
      showError(item, `the file is ${megabytes(file.size)}; this server accepts up to ` +
        `${megabytes(state.config.max_file_bytes)}`);
      return;
    }
    try {
      let bytes = await file.arrayBuffer();
      if (!isWav(bytes)) bytes = await decodeToWav(bytes);
      await scoreBytes(item, bytes);
    } catch (error) {
      showError(item, error.message || String(error));
    }
  }

  function scoreFiles(files) {
    for (const file of files) scoreFile(file);
  }

  // --- recording ------------------------------------------------------------------------------

  async function startRecording() {
    const button = $("record-button");
    const status = $("record-status");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "Recording needs a secure page (https or localhost) and a browser " +
        "with microphone access.";
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
                 autoGainControl: false },
      });
    } catch (error) {
      status.textContent = `No microphone: ${error.message || error.name}`;
      return;
    }
    const Context = window.AudioContext || window.webkitAudioContext;
    const context = new Context();
    const source = context.createMediaStreamSource(stream);
    const chunks = [];
    const mute = context.createGain();
    mute.gain.value = 0;
    let node;
    if (context.audioWorklet && window.AudioWorkletNode) {
      await context.audioWorklet.addModule("/static/recorder-worklet.js");
      node = new AudioWorkletNode(context, "speakergender-recorder");
      node.port.onmessage = (event) => chunks.push(event.data);
    } else {
      node = context.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = (event) => chunks.push(
        new Float32Array(event.inputBuffer.getChannelData(0)));
    }
    source.connect(node);
    node.connect(mute);
    mute.connect(context.destination);
    await context.resume();
    const started = performance.now();
    const limit = state.config.max_duration_seconds;
    const timer = setInterval(() => {
      const elapsed = (performance.now() - started) / 1000;
      status.textContent = `Recording… ${elapsed.toFixed(1)} s`;
      if (elapsed >= limit) stopRecording();
    }, 200);
    state.recorder = { stream, context, node, source, chunks, timer };
    button.textContent = "Stop";
    button.setAttribute("aria-pressed", "true");
    status.textContent = "Recording…";
  }

  async function stopRecording() {
    const recorder = state.recorder;
    if (!recorder) return;
    state.recorder = null;
    clearInterval(recorder.timer);
    const button = $("record-button");
    button.textContent = "Record";
    button.setAttribute("aria-pressed", "false");
    recorder.stream.getTracks().forEach((track) => track.stop());
    recorder.source.disconnect();
    recorder.node.disconnect();
    const rate = recorder.context.sampleRate;
    await recorder.context.close();
    const frames = recorder.chunks.reduce((total, chunk) => total + chunk.length, 0);
    const samples = new Float32Array(frames);
    let offset = 0;
    for (const chunk of recorder.chunks) {
      samples.set(chunk, offset);
      offset += chunk.length;
    }
    state.recordings += 1;
    const title = `Recording ${state.recordings} (${seconds(frames / rate)})`;
    $("record-status").textContent = `${title} sent for scoring.`;
    const item = addResult(title);
    if (frames === 0) {
      showError(item, "nothing was recorded (is the microphone muted?)");
      return;
    }
    await scoreBytes(item, encodeWav([samples], rate));
  }

  // --- setup ----------------------------------------------------------------------------------

  function showConfig(config) {
    $("model-name").textContent = config.model_name;
    $("model-version").textContent = `version ${config.version}`;
    $("api-path").textContent = `/v1/models/${config.model_name}:predict`;
    $("limits-line").textContent = `Files up to ${megabytes(config.max_file_bytes)} and ` +
      `${config.max_duration_seconds} s; recording stops at ${config.max_duration_seconds} s.`;
    $("card-source").textContent = config.card_has_limits
      ? "From the model card:"
      : "This model has no model card; these limits apply to every speakergender model:";
    const list = $("card-limits");
    list.replaceChildren(...config.limits.map((limit) => element("li", {},
      element("details", {},
        element("summary", { text: limit.headline }),
        element("span", { text: ` ${limit.text}` })))));
  }

  function setUp() {
    const input = $("file-input");
    input.addEventListener("change", () => {
      scoreFiles(Array.from(input.files));
      input.value = "";
    });
    const zone = $("drop-zone");
    const stop = (event) => { event.preventDefault(); event.stopPropagation(); };
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
      stop(event);
      zone.classList.add("dragging");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (event) => {
      stop(event);
      zone.classList.remove("dragging");
    }));
    zone.addEventListener("drop", (event) => scoreFiles(Array.from(event.dataTransfer.files)));
    // A file dropped beside the zone would otherwise make the browser leave the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    $("record-button").addEventListener("click", () => {
      if (state.recorder) stopRecording();
      else startRecording().catch((error) => {
        $("record-status").textContent = `Recording failed: ${error.message || error}`;
      });
    });
  }

  async function main() {
    setUp();
    try {
      const response = await fetch("/app/config.json");
      state.config = await response.json();
      showConfig(state.config);
      document.body.dataset.ready = "true";
    } catch (error) {
      $("model-name").textContent = "(server unreachable)";
    }
  }

  main();
})();
