// The household's account, with the keys portal.js derives (window.GVKeys):
// changing the password re-wraps the private key here, in the browser; a
// forgotten password is recovered with the recovery code alone, which then
// is replaced by a new one, shown once. The server only ever receives
// verifiers and wrapped keys: it cannot reset a password, because it never
// had the key the password protects.
(function () {
  const $ = (id) => document.getElementById(id);
  const MIN_PASSWORD = 12;
  const say = (id, msg) => { $(id).textContent = msg; };

  function newPassword(a, b) {
    if (a.length < MIN_PASSWORD) return `Choose at least ${MIN_PASSWORD} characters; a few words make a good one.`;
    if (a !== b) return "The two new passwords differ.";
    return "";
  }

  async function post(url, body, csrf) {
    const headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
    return [r.ok, await r.json().catch(() => ({}))];
  }

  function loggedIn(customer, params, csrf, wrapped) {
    const form = $("password-form");
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const old = $("pw-current").value, a = $("pw-new").value, b = $("pw-repeat").value;
      const problem = newPassword(a, b) || (a === old ? "The new password is the old one." : "");
      if (problem) { say("pw-status", problem); return; }
      try {
        say("pw-status", "Checking your current password…");
        const K = window.GVKeys;
        const current = await K.deriveKeys(old, customer, params);
        let pkcs8;
        try { pkcs8 = await K.unwrapKey(wrapped, current.wrapKey, customer); }
        catch (e) { say("pw-status", "Your current password is not right."); return; }
        say("pw-status", "Locking your key under the new password…");
        const fresh = await K.passwordSecrets(a, customer, pkcs8);
        const [ok, answer] = await post("/api/portal/password",
          { old_verifier: K.b64e(current.verifier), ...fresh }, csrf);
        if (!ok) { say("pw-status", answer.error || "The password was not changed."); return; }
        params = fresh.kdf;
        wrapped = fresh.wrapped_private_key;
        for (const id of ["pw-current", "pw-new", "pw-repeat"]) $(id).value = "";
        say("pw-status", "Password changed. Use the new one from now on; your recovery code stays the same.");
      } catch (e) {
        say("pw-status", "The password was not changed: " + e.message);
      }
    };
    form.querySelector("fieldset").disabled = false;
  }

  // Recovery, from the login card.
  const card = $("recover-card");
  $("forgot").onclick = () => { card.hidden = false; $("rc-customer").value = $("customer").value; $("rc-customer").focus(); };
  $("recover-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const customer = $("rc-customer").value.trim(), code = $("rc-code").value;
    const a = $("rc-new").value, b = $("rc-repeat").value;
    const problem = newPassword(a, b);
    if (problem) { say("rc-status", problem); return; }
    try {
      const K = window.GVKeys;
      say("rc-status", "Opening your key with the recovery code…");
      const held = await (await fetch("/api/portal/recovery?customer=" + encodeURIComponent(customer))).json();
      const keys = await K.recoveryKeys(code, customer, K.b64d(held.salt));
      let pkcs8;
      try { pkcs8 = await K.unwrapKey(held.wrapped_private_key, keys.wrapKey, customer); }
      catch (e) { say("rc-status", "That customer id and recovery code do not open a key."); return; }
      say("rc-status", "Locking your key under the new password…");
      const fresh = await K.passwordSecrets(a, customer, pkcs8);
      const next = await K.recoverySecrets(customer, pkcs8);
      const [ok, answer] = await post("/api/portal/recover", {
        customer, recovery_verifier: K.b64e(keys.verifier), ...fresh, recovery: next.recovery });
      if (!ok) { say("rc-status", answer.error || "Nothing was changed."); return; }
      for (const id of ["rc-code", "rc-new", "rc-repeat"]) $(id).value = "";
      say("rc-status", "");
      $("recover-form").hidden = true;
      $("new-code").textContent = next.code;
      $("new-code-box").hidden = false;
    } catch (e) {
      say("rc-status", "Nothing was changed: " + e.message);
    }
  };
  $("recover-form").querySelector("fieldset").disabled = false;

  window.GVAccount = { loggedIn };
})();
