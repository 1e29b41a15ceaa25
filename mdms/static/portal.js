// The customer portal: everything secret happens here, in the browser.
// From the password and one salt, PBKDF2 derives a master value; HKDF with
// two labels splits it into a login verifier (sent to the server) and a
// wrapping key (never sent) that unwraps the customer's RSA-OAEP private key;
// that opens each day's AES-GCM key, which opens each reading. The labels and
// the iteration floor are this script's own, whatever the server sends. See
// common/customer.py for the same steps in Python.
(function () {
  const MIN_ITERATIONS = 600000, MAX_ITERATIONS = 10000000;  // as common/customer.py
  const KDF_NAME = "PBKDF2-SHA256/HKDF-SHA256";
  const enc = new TextEncoder();
  const b64d = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const b64e = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
  const status = (msg) => { document.getElementById("status").textContent = msg; };

  // Minimal CBOR reader for [seq, interval_end, energy_wh, register_wh]
  // (the gateway writes each number 8 bytes wide: every copy has one length).
  function cborUints(bytes) {
    let i = 0;
    const head = () => {
      const b = bytes[i++], major = b >> 5, info = b & 31;
      let n = info;
      if (info >= 24) {
        const size = 1 << (info - 24);
        n = 0;
        for (let k = 0; k < size; k++) n = n * 256 + bytes[i++];
      }
      return [major, n];
    };
    const [major, len] = head();
    if (major !== 4) throw new Error("not a CBOR array");
    const out = [];
    for (let k = 0; k < len; k++) {
      const [m, n] = head();
      if (m !== 0) throw new Error("not an unsigned integer");
      out.push(n);
    }
    return out;
  }

  function checkParams(p) {
    if (!p || p.name !== KDF_NAME) throw new Error("the server sent an unknown key derivation");
    if (!Number.isInteger(p.iterations) || p.iterations < MIN_ITERATIONS ||
        p.iterations > MAX_ITERATIONS) {
      throw new Error(`the server asked for ${p.iterations} PBKDF2 iterations; this page derives`
                      + ` keys only with ${MIN_ITERATIONS} to ${MAX_ITERATIONS}`);
    }
    const salt = b64d(p.salt);
    if (salt.length < 16) throw new Error("the server sent a salt shorter than 16 bytes");
    return salt;
  }

  async function deriveKeys(password, customer, p) {
    const salt = checkParams(p);
    const base = await crypto.subtle.importKey("raw", enc.encode(password), "PBKDF2", false,
                                               ["deriveBits"]);
    const master = await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash: "SHA-256", salt, iterations: p.iterations }, base, 256);
    const hkdf = await crypto.subtle.importKey("raw", master, "HKDF", false,
                                               ["deriveBits", "deriveKey"]);
    const label = (l) => ({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0),
                            info: enc.encode(l + customer) });
    const verifier = await crypto.subtle.deriveBits(label("gridveil-portal-login-v2|"), hkdf, 256);
    const wrapKey = await crypto.subtle.deriveKey(label("gridveil-portal-wrap-v2|"), hkdf,
                                                  { name: "AES-GCM", length: 256 }, false,
                                                  ["encrypt", "decrypt"]);
    return { verifier, wrapKey };
  }

  // The private key (PKCS#8) in and out of its AES-GCM wrapping; the
  // customer id is the associated data, as in common/customer.py.
  async function unwrapKey(w, wrapKey, customer) {
    return crypto.subtle.decrypt(
      { name: "AES-GCM", iv: b64d(w.nonce), additionalData: enc.encode(customer) },
      wrapKey, b64d(w.ciphertext));
  }
  async function wrapKeyWith(pkcs8, wrapKey, customer) {
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: enc.encode(customer) }, wrapKey, pkcs8);
    return { alg: "AES-GCM", nonce: b64e(nonce), ciphertext: b64e(ct) };
  }

  // A new password: a fresh salt, the floor's iterations, the keys wrapped
  // anew and unwrapped once more before anything is sent. `keys`: the
  // PKCS#8 of the sealing key and, for accounts that have one, the signing key.
  async function passwordSecrets(password, customer, keys) {
    const kdf = { name: KDF_NAME, iterations: MIN_ITERATIONS,
                  salt: b64e(crypto.getRandomValues(new Uint8Array(16))) };
    const { verifier, wrapKey } = await deriveKeys(password, customer, kdf);
    const out = { kdf, verifier: b64e(verifier), ...await wrapBoth(keys, wrapKey, customer) };
    await unwrapKey(out.wrapped_private_key, wrapKey, customer);
    return out;
  }
  async function wrapBoth(keys, wrapKey, customer) {
    const out = { wrapped_private_key: await wrapKeyWith(keys.seal, wrapKey, customer) };
    if (keys.sign) out.wrapped_signing_key = await wrapKeyWith(keys.sign, wrapKey, customer);
    return out;
  }
  async function unwrapBoth(held, wrapKey, customer) {
    const keys = { seal: await unwrapKey(held.wrapped_private_key, wrapKey, customer) };
    if (held.wrapped_signing_key) keys.sign = await unwrapKey(held.wrapped_signing_key, wrapKey, customer);
    return keys;
  }

  // The household's consent (common/consent.py): ECDSA P-256 over
  // "gridveil-consent-v1|household|meters|SHA-256(signing key)|SHA-256(sealing key)",
  // and at activation an HMAC of it under the key the letter's code stands for.
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
  async function statement(customer, meters, signPub, sealPub) {
    const h = async (b) => hex(await crypto.subtle.digest("SHA-256", b));
    return enc.encode(["gridveil-consent-v1", customer, [...meters].sort().join(","),
                       await h(signPub), await h(sealPub)].join("|"));
  }
  async function signConsent(customer, meters, signPkcs8, signPub, sealPub, code) {
    const st = await statement(customer, meters, signPub, sealPub);
    const key = await crypto.subtle.importKey("pkcs8", signPkcs8, { name: "ECDSA", namedCurve: "P-256" },
                                              false, ["sign"]);
    const out = { household: customer, meters: [...meters].sort(), sign_pub: b64e(signPub),
                  seal_pub: b64e(sealPub),
                  signature: b64e(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, st)) };
    if (code) {
      const ikm = code.toUpperCase().replace(/[-\s]/g, "");
      const base = await crypto.subtle.importKey("raw", enc.encode(ikm), "HKDF", false, ["deriveKey"]);
      const mac = await crypto.subtle.deriveKey(
        { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0),
          info: enc.encode("gridveil-activation-v1|" + customer) },
        base, { name: "HMAC", hash: "SHA-256", length: 256 }, false, ["sign"]);
      out.proof = b64e(await crypto.subtle.sign("HMAC", mac, st));
    }
    return out;
  }
  // The household's two key pairs, made here: RSA-OAEP for its sealed
  // readings, ECDSA P-256 for its consents.
  async function newKeys() {
    const seal = await crypto.subtle.generateKey(
      { name: "RSA-OAEP", modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
      true, ["encrypt", "decrypt"]);
    const sign = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true,
                                                 ["sign", "verify"]);
    return { seal: await crypto.subtle.exportKey("pkcs8", seal.privateKey),
             sign: await crypto.subtle.exportKey("pkcs8", sign.privateKey),
             sealPub: await crypto.subtle.exportKey("spki", seal.publicKey),
             signPub: await crypto.subtle.exportKey("spki", sign.publicKey) };
  }

  // Recovery codes: 128 random bits as 26 base32 letters (common/customer.py).
  const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  function newRecoveryCode() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    let bits = "", out = "";
    for (const b of bytes) bits += b.toString(2).padStart(8, "0");
    for (let i = 0; i < bits.length; i += 5) out += B32[parseInt(bits.slice(i, i + 5).padEnd(5, "0"), 2)];
    return out.match(/.{1,4}/g).join("-");
  }
  async function recoveryKeys(code, customer, salt) {
    const ikm = code.toUpperCase().replace(/[-\s]/g, "");
    if (ikm.length !== 26) throw new Error("a recovery code has 26 letters and digits");
    const base = await crypto.subtle.importKey("raw", enc.encode(ikm), "HKDF", false,
                                               ["deriveBits", "deriveKey"]);
    const label = (l) => ({ name: "HKDF", hash: "SHA-256", salt, info: enc.encode(l + customer) });
    const verifier = await crypto.subtle.deriveBits(label("gridveil-recovery-login-v1|"), base, 256);
    const wrapKey = await crypto.subtle.deriveKey(label("gridveil-recovery-wrap-v1|"), base,
                                                  { name: "AES-GCM", length: 256 }, false,
                                                  ["encrypt", "decrypt"]);
    return { verifier, wrapKey };
  }
  async function recoverySecrets(customer, keys) {
    const code = newRecoveryCode(), salt = crypto.getRandomValues(new Uint8Array(16));
    const { verifier, wrapKey } = await recoveryKeys(code, customer, salt);
    return { code, recovery: { salt: b64e(salt), verifier: b64e(verifier),
                               ...await wrapBoth(keys, wrapKey, customer) } };
  }
  window.GVKeys = { b64d, b64e, deriveKeys, unwrapKey, unwrapBoth, passwordSecrets,
                    recoveryKeys, recoverySecrets, newKeys, signConsent };

  async function decryptAll(data, wrapKey) {
    const pkcs8 = await unwrapKey(data.wrapped_private_key, wrapKey, data.customer);
    const priv = await crypto.subtle.importKey("pkcs8", pkcs8,
                                               { name: "RSA-OAEP", hash: "SHA-256" }, false, ["decrypt"]);
    const dayKeys = new Map();
    for (const k of data.day_keys) {
      const raw = await crypto.subtle.decrypt({ name: "RSA-OAEP" }, priv, b64d(k.wrapped));
      dayKeys.set(`${k.meter}|${k.day}|${k.key_no}`,
                  await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]));
    }
    const rows = [];
    for (const r of data.readings) {
      const key = dayKeys.get(`${r.meter}|${r.day}|${r.key_no}`);
      const pt = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: b64d(r.nonce),
          additionalData: enc.encode(`gridveil-reading-v1|${r.meter}|${r.seq}`) },
        key, b64d(r.ct));
      const [seq, end, wh, register] = cborUints(new Uint8Array(pt));
      rows.push({ meter: r.meter, seq, end, wh, register });
    }
    return rows;
  }

  function render(customer, data, rows) {
    document.getElementById("login-card").hidden = true;
    document.getElementById("app").hidden = false;
    document.getElementById("who").textContent = customer;
    window.GVHousehold.show(data, rows);  // household.js: views, money, bills, CSV
    document.body.dataset.ready = "yes";
  }

  const form = document.getElementById("portal-login");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const customer = document.getElementById("customer").value.trim();
    const password = document.getElementById("password").value;
    try {
      status("Deriving keys from your password…");
      const params = await (await fetch("/api/portal/params?customer=" + encodeURIComponent(customer))).json();
      const { verifier, wrapKey } = await deriveKeys(password, customer, params);
      document.getElementById("password").value = "";
      const login = await fetch("/api/portal/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ customer, verifier: b64e(verifier) }) });
      if (!login.ok) { status((await login.json()).error || "Login failed."); return; }
      const { csrf } = await login.json();
      document.getElementById("portal-logout").onclick = async () => {
        await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
        location.assign("/portal");  // the keys lived in this page only: gone with it
      };
      status("Fetching your sealed readings…");
      const data = await (await fetch("/api/portal/data")).json();
      window.GVAccount.loggedIn(customer, params, csrf, data, wrapKey);  // account.js
      status("Decrypting on this device…");
      render(customer, data, await decryptAll(data, wrapKey));
    } catch (e) {
      status("Could not unlock your readings: " + e.message);
    }
  });
  // The form ships disabled and without field names: before this script has
  // run, nothing can be submitted, and nothing would carry the password.
  form.querySelector("fieldset").disabled = false;
  form.dataset.ready = "yes";
})();
