// Talk to an agent over WebRTC with nothing but the browser: the microphone goes out on a
// plain RTCPeerConnection, the bot's audio comes back and plays. The offer goes to the
// session's api/offer through cattery, ICE servers are the start's answer (none unless
// configured), and a data channel carries the "ping" messages Pipecat's clients send.
// window.catteryTalk.stats() reports what came back (for tests and the level meter).
(() => {
  const root = document.getElementById("talk");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const status = $("talk-status");
  const startButton = $("talk-start");
  const stopButton = $("talk-stop");
  const level = $("talk-level");
  const audio = $("talk-audio");
  const received = { energy: 0, peak: 0, frames: 0, sessionId: null, state: "idle" };
  let pc = null;
  let mic = null;
  let timers = [];
  let context = null;

  function say(text, kind = "") {
    status.textContent = text;
    status.className = `status ${kind}`;
  }

  async function post(url, body, method = "POST") {
    const headers = { "content-type": "application/json" };
    if (root.dataset.csrf) headers["x-csrf-token"] = root.dataset.csrf;
    const resp = await fetch(url, { method, headers, body: JSON.stringify(body) });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || `${url} answered ${resp.status}`);
    return data;
  }

  function gathered(timeoutMs = 10000) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs); // offer what was gathered so far
    });
  }

  // Chromium hands remote WebRTC audio to Web Audio only while an element plays it too.
  function listen(event) {
    const stream = event.streams[0] || new MediaStream([event.track]);
    audio.srcObject = stream;
    audio.play().catch(() => {});
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    timers.push(
      setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const x of samples) sum += x * x;
        const rms = Math.sqrt(sum / samples.length);
        received.energy += rms * rms;
        received.peak = Math.max(received.peak, rms);
        received.frames += 1;
        level.style.width = `${Math.min(100, rms * 400)}%`;
      }, 50),
    );
  }

  async function start() {
    startButton.disabled = true;
    context = new AudioContext(); // made in the click, so it may play
    try {
      say("Asking for the microphone…");
      mic = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      say("Starting a session…");
      const ice = $("talk-ice");
      const started = await post(root.dataset.startUrl, {
        transport: "webrtc",
        enableDefaultIceServers: Boolean(ice && ice.checked),
      });
      received.sessionId = started.sessionId;
      const offerUrl = root.dataset.offerUrl.replace("{sessionId}", started.sessionId);
      if (root.dataset.sessionUrl) {
        const link = $("talk-session");
        link.href = root.dataset.sessionUrl.replace("{sessionId}", started.sessionId);
        link.classList.remove("hidden");
      }
      const iceServers = (started.iceConfig && started.iceConfig.iceServers) || [];
      pc = new RTCPeerConnection({ iceServers });
      for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
      pc.addEventListener("track", listen);
      pc.addEventListener("connectionstatechange", () => {
        received.state = pc.connectionState;
        if (pc.connectionState === "connected") say("Connected: speak, the agent hears you.", "ok");
        if (pc.connectionState === "failed") say("The connection failed.", "error");
      });
      const channel = pc.createDataChannel("chat", { ordered: true });
      channel.addEventListener("open", () => {
        timers.push(setInterval(() => channel.readyState === "open" && channel.send(`ping: ${Date.now()}`), 1000));
      });
      await pc.setLocalDescription(await pc.createOffer());
      say("Connecting…");
      await gathered();
      const answer = await post(offerUrl, { sdp: pc.localDescription.sdp, type: "offer" });
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      stopButton.disabled = false;
    } catch (err) {
      say(`Could not talk: ${err.message}`, "error");
      hangUp(false);
    }
  }

  function hangUp(done = true) {
    for (const timer of timers) clearInterval(timer);
    timers = [];
    if (pc) pc.close();
    if (mic) for (const track of mic.getTracks()) track.stop();
    pc = null;
    mic = null;
    level.style.width = "0";
    received.state = "closed";
    startButton.disabled = false;
    stopButton.disabled = true;
    if (done) say("Hung up.");
  }

  startButton.addEventListener("click", start);
  stopButton.addEventListener("click", () => hangUp());
  window.catteryTalk = { stats: () => ({ ...received }), hangUp };
})();
