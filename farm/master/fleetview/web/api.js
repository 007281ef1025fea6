// Calls to the farm's control API, as any other client makes them. When the farm has a
// token, the page asks for it once and keeps it in sessionStorage: this tab only, gone
// when the tab closes, never sent anywhere but this farm's own API.

const TOKEN_KEY = "modbus-farm-token";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function tokenRequired() {
  return document.body.dataset.tokenRequired === "true";
}

// Resolves with the token, asking for it in the page's dialog when none is kept yet.
function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  dialog.querySelector(".cancel").onclick = () => dialog.close("cancel");
  dialog.querySelector(".reason").textContent = reason;
  input.value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const token = dialog.returnValue === "ok" ? input.value.trim() : "";
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        resolve(token);
      },
      { once: true },
    );
  });
}

async function token(reason) {
  return sessionStorage.getItem(TOKEN_KEY) || (await askToken(reason));
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const mutating = method !== "GET";
  // The API takes every change as JSON, {} when there is nothing to say.
  if (mutating) body ??= {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (mutating && tokenRequired()) {
    const given = await token("This farm needs its API token for changes.");
    if (!given) throw new ApiError("no token given: nothing was changed", 401);
    headers.Authorization = `Bearer ${given}`;
  }
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (response.status === 401 && mutating) {
    sessionStorage.removeItem(TOKEN_KEY); // a wrong token: ask again next time
  }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  return data;
}

export const get = (path) => call("GET", path);
