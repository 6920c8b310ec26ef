// A minimal SmallWebRTC client for tests, evaluated in a page served by the runtime so that
// fetch("/api/offer") is same-origin. It sends the fake microphone, keeps the data channel
// alive with the "ping" messages Pipecat's clients send, and reports what comes back.
// `url` (and `headers`) send the offer elsewhere on the origin, e.g. to a Session API route.
window.catteryWebRTC = (() => {
  let pc = null;
  let pingTimer = null;
  let playing = null;
  let offerUrl = "/api/offer";
  let offerHeaders = {};
  const localCandidates = [];

  function gatheringComplete(timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("ICE gathering did not complete")), timeoutMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function postJson(method, body, headers = {}) {
    const resp = await fetch(offerUrl, {
      method,
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    let json = null;
    try {
      json = await resp.json();
    } catch (err) {
      json = { unparsable: String(err) };
    }
    return { status: resp.status, body: json };
  }

  // Offer the fake microphone; resolves with the answer's pc_id once the answer is set.
  async function connect({
    headers = {},
    requestData,
    gatherTimeoutMs = 15000,
    url = "/api/offer",
    iceServers = [],
  } = {}) {
    offerUrl = url;
    offerHeaders = headers;
    pc = new RTCPeerConnection({ iceServers });
    pc.addEventListener("icecandidate", (event) => {
      if (event.candidate && event.candidate.candidate) localCandidates.push(event.candidate);
    });
    // Chromium decodes received audio only for a sink that plays it.
    pc.addEventListener("track", (event) => {
      const audio = document.createElement("audio");
      audio.srcObject = event.streams[0] || new MediaStream([event.track]);
      document.body.appendChild(audio);
      playing = audio.play().then(
        () => "playing",
        (err) => `play() failed: ${err}`,
      );
    });
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    const channel = pc.createDataChannel("chat", { ordered: true });
    channel.addEventListener("open", () => {
      pingTimer = setInterval(() => {
        if (channel.readyState === "open") channel.send("ping: " + Date.now());
      }, 500);
    });

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(gatherTimeoutMs);
    const offer = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
    if (requestData !== undefined) offer.request_data = requestData;
    const answer = await postJson("POST", offer, headers);
    if (answer.status !== 200) {
      throw new Error(`POST /api/offer answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    }
    await pc.setRemoteDescription({ sdp: answer.body.sdp, type: answer.body.type });
    return {
      pcId: answer.body.pc_id,
      candidates: localCandidates.map((c) => c.candidate),
    };
  }

  // Trickle the first gathered candidate again, the way Pipecat's clients PATCH them.
  function trickle(pcId) {
    const c = localCandidates[0];
    const candidates = c
      ? [{ candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex }]
      : [];
    return postJson("PATCH", { pc_id: pcId, candidates }, offerHeaders);
  }

  // What the remote audio track has delivered so far (inbound-rtp audio).
  async function inboundAudio() {
    const result = {
      connectionState: pc ? pc.connectionState : "none",
      playback: playing ? await playing : "no remote track",
      found: false,
    };
    if (!pc) return result;
    const stats = await pc.getStats();
    stats.forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        Object.assign(result, {
          found: true,
          bytesReceived: report.bytesReceived || 0,
          packetsReceived: report.packetsReceived || 0,
          totalAudioEnergy: report.totalAudioEnergy || 0,
          totalSamplesReceived: report.totalSamplesReceived || 0,
          audioLevel: report.audioLevel || 0,
        });
      }
    });
    return result;
  }

  function close() {
    if (pingTimer !== null) clearInterval(pingTimer);
    pingTimer = null;
    if (pc) pc.close();
  }

  return { connect, trickle, inboundAudio, close, postJson };
})();
