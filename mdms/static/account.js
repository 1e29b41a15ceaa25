// The household's account, with the keys portal.js derives (window.GVKeys):
// activation makes the household's keys here and signs its consent to its
// meters (the guardian's one-time code proven, never sent); changing the
// password re-wraps the private keys here, in the browser; a forgotten
// password is recovered with the recovery code alone, which then is
// replaced by a new one, shown once. The server only ever receives
// verifiers, public keys, signatures and wrapped keys: it cannot reset a
// password, because it never had the keys the password protects.
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

  function loggedIn(customer, params, csrf, data, wrapKey) {
    let held = { wrapped_private_key: data.wrapped_private_key,
                 wrapped_signing_key: data.wrapped_signing_key };
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
        let keys;
        try { keys = await K.unwrapBoth(held, current.wrapKey, customer); }
        catch (e) { say("pw-status", "Your current password is not right."); return; }
        say("pw-status", "Locking your keys under the new password…");
        const fresh = await K.passwordSecrets(a, customer, keys);
        const [ok, answer] = await post("/api/portal/password",
          { old_verifier: K.b64e(current.verifier), ...fresh }, csrf);
        if (!ok) { say("pw-status", answer.error || "The password was not changed."); return; }
        params = fresh.kdf;
        held = fresh;
        wrapKey = (await K.deriveKeys(a, customer, params)).wrapKey;
        for (const id of ["pw-current", "pw-new", "pw-repeat"]) $(id).value = "";
        say("pw-status", "Password changed. Use the new one from now on; your recovery code stays the same.");
      } catch (e) {
        say("pw-status", "The password was not changed: " + e.message);
      }
    };
    form.querySelector("fieldset").disabled = false;

    // Meters the guardian enrolled since: confirmed only with this household's key.
    const waiting = data.to_confirm || [];
    $("confirm-card").hidden = waiting.length === 0 || !data.wrapped_signing_key;
    $("confirm-meters").textContent = waiting.join(", ");
    $("confirm-yes").onclick = async () => {
      try {
        const K = window.GVKeys;
        say("confirm-status", "Signing with your household's key…");
        const keys = await K.unwrapBoth(held, wrapKey, customer);
        const consent = await K.signConsent(customer, waiting, keys.sign, K.b64d(data.signing_public_key),
                                            K.b64d(data.public_key));
        const [ok, answer] = await post("/api/portal/consent", { consent }, csrf);
        say("confirm-status", ok ? `Confirmed: ${answer.meters.join(", ")} count as yours.`
          : answer.error || "Nothing was confirmed.");
        $("confirm-yes").disabled = ok;
      } catch (e) {
        say("confirm-status", "Nothing was confirmed: " + e.message);
      }
    };
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
      say("rc-status", "Opening your keys with the recovery code…");
      const held = await (await fetch("/api/portal/recovery?customer=" + encodeURIComponent(customer))).json();
      const rk = await K.recoveryKeys(code, customer, K.b64d(held.salt));
      let keys;
      try { keys = await K.unwrapBoth(held, rk.wrapKey, customer); }
      catch (e) { say("rc-status", "That customer id and recovery code do not open a key."); return; }
      say("rc-status", "Locking your keys under the new password…");
      const fresh = await K.passwordSecrets(a, customer, keys);
      const next = await K.recoverySecrets(customer, keys);
      const [ok, answer] = await post("/api/portal/recover", {
        customer, recovery_verifier: K.b64e(rk.verifier), ...fresh, recovery: next.recovery });
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

  // Activation, from the login card: the guardian's letter in hand.
  let asked = [];
  $("first-time").onclick = () => { $("activate-card").hidden = false; $("ac-customer").focus(); };
  $("ac-look").onclick = async () => {
    const customer = $("ac-customer").value.trim();
    const r = await fetch("/api/portal/activation?customer=" + encodeURIComponent(customer));
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) { say("ac-status", answer.error || "No activation waits for that household."); return; }
    asked = answer.to_confirm;
    say("ac-meters", `Meters to confirm: ${asked.join(", ")}. Compare them with your letter.`);
    $("ac-meters-box").hidden = false;
    say("ac-status", "");
  };
  $("activate-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const customer = $("ac-customer").value.trim(), code = $("ac-code").value;
    const a = $("ac-new").value, b = $("ac-repeat").value;
    const problem = newPassword(a, b) || (asked.length ? "" : "Show the meters to confirm first.");
    if (problem) { say("ac-status", problem); return; }
    try {
      const K = window.GVKeys;
      say("ac-status", "Making your keys on this device…");
      const keys = await K.newKeys();
      const fresh = await K.passwordSecrets(a, customer, keys);
      const next = await K.recoverySecrets(customer, keys);
      const consent = await K.signConsent(customer, asked, keys.sign, keys.signPub, keys.sealPub, code);
      say("ac-status", "Sending your consent to your privacy guardian…");
      const [ok, answer] = await post("/api/portal/activate", {
        customer, ...fresh, public_key: K.b64e(keys.sealPub), signing_public_key: K.b64e(keys.signPub),
        recovery: next.recovery, consent });
      if (!ok) { say("ac-status", answer.error || "Your household was not activated."); return; }
      for (const id of ["ac-code", "ac-new", "ac-repeat"]) $(id).value = "";
      say("ac-status", "");
      $("activate-form").hidden = true;
      $("ac-recovery").textContent = next.code;
      $("ac-code-box").hidden = false;
      $("customer").value = customer;
    } catch (e) {
      say("ac-status", "Your household was not activated: " + e.message);
    }
  };
  $("activate-form").querySelector("fieldset").disabled = false;

  window.GVAccount = { loggedIn };
})();
