// tsgate proof-of-work solver (ALTCHA v2, PBKDF2) in a Web Worker, using WebCrypto only.
// Input: {parameters}. Output: {counter, derivedKey, time} or {error}.
"use strict";

const HASHES = { "PBKDF2/SHA-256": "SHA-256", "PBKDF2/SHA-384": "SHA-384", "PBKDF2/SHA-512": "SHA-512" };

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function bytesToHex(bytes) {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

self.onmessage = async (event) => {
  const p = event.data.parameters;
  const hash = HASHES[p.algorithm];
  if (!hash || !self.crypto || !self.crypto.subtle) {
    self.postMessage({ error: "unsupported" });
    return;
  }
  const nonce = hexToBytes(p.nonce);
  const salt = hexToBytes(p.salt);
  const prefix = String(p.keyPrefix).toLowerCase();
  const bits = (p.keyLength || 32) * 8;
  const password = new Uint8Array(nonce.length + 4);
  password.set(nonce, 0);
  const view = new DataView(password.buffer);
  const started = performance.now();
  for (let counter = 0; counter <= 0xffffffff; counter++) {
    view.setUint32(nonce.length, counter, false); // big-endian, ALTCHA "uint32" counter mode
    const key = await crypto.subtle.importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    const derived = new Uint8Array(await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash, salt, iterations: p.cost }, key, bits));
    const hex = bytesToHex(derived);
    if (hex.startsWith(prefix)) {
      self.postMessage({ counter, derivedKey: hex, time: performance.now() - started });
      return;
    }
    if (counter % 16 === 0) self.postMessage({ progress: counter });
  }
  self.postMessage({ error: "not-found" });
};
