// AudioWorklet processor for the Record button: passes the microphone's samples, mixed down to
// mono, to the page in blocks (the page encodes them as a 16-bit PCM WAV file when recording
// stops).
class RecorderProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0 && input[0].length > 0) {
      const frames = input[0].length;
      const mono = new Float32Array(frames);
      for (const channel of input) {
        for (let i = 0; i < frames; i++) mono[i] += channel[i] / input.length;
      }
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}

registerProcessor("speakergender-recorder", RecorderProcessor);
