// The portal's URL generator (OAuth2 section): rebuilds the authorize link as scopes,
// permissions and the redirect URI change, by the rules of the server's own generation
// (web/portal.py generated_url). Without this script the form's Generate button asks the
// server for the same link.
(() => {
  const form = document.getElementById("generator-form");
  if (!form) return;
  const byId = (id) => document.getElementById(id);

  // application/x-www-form-urlencoded as Python's urlencode writes it (quote_plus): only
  // letters, digits and "_.-~" stay as they are; a space is "+".
  const encode = (text) => encodeURIComponent(text)
    .replace(/[!'()*]/g, (ch) => "%" + ch.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%20/g, "+");
  const query = (pairs) => pairs.map(([name, value]) => encode(name) + "=" + encode(value)).join("&");

  function build() {
    // The boxes are in the canonical scope order, which is the order the server writes.
    const scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((box) => box.value);
    if (scopes.length === 0) return { url: null, error: false, pkce: false };
    const pairs = [["client_id", form.dataset.clientId], ["scope", scopes.join(" ")]];
    let pkce = false;
    if (!(scopes.length === 1 && scopes[0] === "bot")) {
      const redirect = byId("redirect_uri");
      if (!redirect || !redirect.value) return { url: null, error: true, pkce: false };
      pairs.push(["response_type", "code"], ["redirect_uri", redirect.value]);
      pkce = form.dataset.publicClient === "1";
    }
    if (scopes.includes("bot")) {
      let permissions = 0n;  // bits above 2^53: BigInt
      for (const box of form.querySelectorAll("input[name=permission]:checked")) {
        permissions |= BigInt(box.dataset.bit);
      }
      pairs.push(["permissions", permissions.toString()]);
    }
    return { url: form.dataset.authorizeUrl + "?" + query(pairs), error: false, pkce };
  }

  function update() {
    const { url, error, pkce } = build();
    byId("generated-empty").hidden = url !== null || error;
    byId("generated-error").hidden = !error;
    byId("generated-link").hidden = url === null;
    if (url !== null) {
      byId("generated-url").textContent = url;
      byId("open-url").href = url;
    }
    const pkceNote = byId("pkce-required");
    if (pkceNote) pkceNote.hidden = !pkce;
  }

  form.addEventListener("change", update);
  update();
})();
