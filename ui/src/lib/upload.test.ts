import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it, vi } from "vitest";
import { setToken } from "./settings";
import { MEDIA_ACCEPT, MEDIA_EXTENSIONS, type UploadRequest, uploadErrorMessage, uploadFile, uploadUrl } from "./upload";

class FakeRequest implements UploadRequest {
  method = "";
  url = "";
  headers: Record<string, string> = {};
  body: Blob | null = null;
  aborted = false;
  status = 0;
  responseText = "";
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  upload: UploadRequest["upload"] = { onprogress: null };
  open(method: string, url: string) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(name: string, value: string) {
    this.headers[name] = value;
  }
  send(body: Blob) {
    this.body = body;
  }
  abort() {
    this.aborted = true;
    this.onabort?.();
  }
  answer(status: number, body: unknown) {
    this.status = status;
    this.responseText = typeof body === "string" ? body : JSON.stringify(body);
    this.onload?.();
  }
}

const file = () => new File([new Uint8Array(10)], "My clip #1.mp4");

afterEach(() => {
  setToken("");
  vi.unstubAllGlobals();
});

describe("uploadUrl", () => {
  it("passes the file name as one encoded query parameter", () => {
    expect(uploadUrl("My clip #1.mp4")).toBe("/api/upload?filename=My%20clip%20%231.mp4");
    expect(uploadUrl("a&b=c.mp3")).toBe("/api/upload?filename=a%26b%3Dc.mp3");
  });
});

describe("uploadFile", () => {
  it("posts the file itself, reports progress and resolves with the asset", async () => {
    const req = new FakeRequest();
    const seen: number[] = [];
    const done = uploadFile(file(), (f) => seen.push(f), undefined, () => req);
    expect([req.method, req.url, req.headers["Content-Type"]]).toEqual([
      "POST",
      "/api/upload?filename=My%20clip%20%231.mp4",
      "application/octet-stream",
    ]);
    expect(req.body?.size).toBe(10);
    req.upload.onprogress?.({ loaded: 5, total: 10, lengthComputable: true });
    req.upload.onprogress?.({ loaded: 3, total: 0, lengthComputable: false });
    req.upload.onprogress?.({ loaded: 10, total: 10, lengthComputable: true });
    req.answer(201, { id: "a1", path: "My clip #1 (1).mp4", status: "ready", renamed: true });
    await expect(done).resolves.toMatchObject({ id: "a1", renamed: true });
    expect(seen).toEqual([0.5, 1]);
  });

  it("sends the API token when one is set", async () => {
    const store = new Map<string, string>(); // the browser's localStorage, where Settings keeps the token
    vi.stubGlobal("localStorage", {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => void store.set(k, v),
      removeItem: (k: string) => void store.delete(k),
    });
    setToken("s3cret");
    const req = new FakeRequest();
    const done = uploadFile(file(), undefined, undefined, () => req);
    expect(req.headers.Authorization).toBe("Bearer s3cret");
    req.answer(201, { id: "a1" });
    await done;
  });

  it("rejects with the server's message, or what the status means", async () => {
    for (const [status, body, message] of [
      [400, { error: "'x.txt' is not a supported media file" }, "'x.txt' is not a supported media file"],
      [413, { error: "over the limit (MPR_UPLOAD_MAX_BYTES)" }, "over the limit (MPR_UPLOAD_MAX_BYTES)"],
      [413, "", "The file is larger than the server accepts (MPR_UPLOAD_MAX_BYTES)."],
      [401, { error: "" }, "Not authorised: set the API token in Settings."],
      [502, "<html>bad gateway</html>", "The server answered 502"],
    ] as const) {
      const req = new FakeRequest();
      const done = uploadFile(file(), undefined, undefined, () => req);
      req.answer(status, body);
      await expect(done).rejects.toThrow(message);
    }
  });

  it("rejects on a dropped connection and on abort", async () => {
    const dropped = new FakeRequest();
    const failed = uploadFile(file(), undefined, undefined, () => dropped);
    dropped.onerror?.();
    await expect(failed).rejects.toThrow("cut off");

    const controller = new AbortController();
    const req = new FakeRequest();
    const cancelled = uploadFile(file(), undefined, controller.signal, () => req);
    controller.abort();
    expect(req.aborted).toBe(true);
    await expect(cancelled).rejects.toThrow("Upload cancelled.");
  });

  it("says so when the answer is not JSON", async () => {
    const req = new FakeRequest();
    const done = uploadFile(file(), undefined, undefined, () => req);
    req.answer(201, "not json");
    await expect(done).rejects.toThrow("not readable");
  });
});

describe("uploadErrorMessage", () => {
  it("keeps the server's text for other statuses", () => {
    expect(uploadErrorMessage(400, JSON.stringify({ error: "storage key must not contain '..'" }))).toBe(
      "storage key must not contain '..'",
    );
  });
});

describe("MEDIA_EXTENSIONS", () => {
  it("are the server's (mpr/scan.py), so the file picker offers what the server takes", () => {
    const source = readFileSync(new URL("../../../mpr/scan.py", import.meta.url), "utf8");
    const server = [...source.matchAll(/_EXTENSIONS = frozenset\(\s*\{([^}]*)\}/g)].flatMap((m) =>
      [...m[1].matchAll(/"(\w+)"/g)].map((x) => x[1]),
    );
    expect(server.length).toBeGreaterThan(20);
    expect([...MEDIA_EXTENSIONS].sort()).toEqual(server.sort());
    expect(MEDIA_ACCEPT.split(",")).toContain(".mp4");
  });
});
