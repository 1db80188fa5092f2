import { solveChallenge } from 'altcha-lib';
import { deriveKey } from 'altcha-lib/algorithms/pbkdf2';
const base = process.argv[2];
const res = await fetch(`${base}/_tsgate/captcha/challenge?level=1`);
const challenge = await res.json();
const t0 = Date.now();
const solution = await solveChallenge({ challenge, deriveKey });
if (!solution) { console.log("no solution"); process.exit(1); }
const payload = Buffer.from(JSON.stringify({ challenge, solution })).toString('base64');
const verify = await fetch(`${base}/_tsgate/captcha/verify`, { method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({ altcha: payload }) });
console.log("solved in", Date.now() - t0, "ms; verify status", verify.status, (await verify.text()).slice(0, 200));
