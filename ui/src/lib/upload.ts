// Upload a media file into MEDIA_IN: POST /api/upload?filename=NAME with the File as the body.
// XMLHttpRequest, not fetch: only XHR reports upload progress. The browser streams the File from disk.
import { ApiError } from "./graphql";
import { authHeaders } from "./settings";

export interface UploadResult {
  id: string;
  path: string;
  filename: string;
  status: string;
  kind: string;
  error: string | null;
  renamed: boolean;
}

/** The part of XMLHttpRequest an upload uses (a test passes a double). */
export interface UploadRequest {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  send(body: Blob): void;
  abort(): void;
  status: number;
  responseText: string;
  onload: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
  upload: { onprogress: ((ev: { loaded: number; total: number; lengthComputable: boolean }) => void) | null };
}

// The file picker's filter: mpr.scan.MEDIA_EXTENSIONS (the server checks the name again).
export const MEDIA_EXTENSIONS = [
  "mp4", "mkv", "avi", "mov", "webm", "flv", "wmv", "m4v", "ts", "m2ts", "mts", "mpg", "mpeg", "ogv", "3gp",
  "mp3", "wav", "flac", "aac", "ogg", "m4a", "mka", "opus", "wma", "aiff", "aif",
];
export const MEDIA_ACCEPT = MEDIA_EXTENSIONS.map((e) => `.${e}`).join(",");

export function uploadUrl(name: string): string {
  return `/api/upload?filename=${encodeURIComponent(name)}`;
}

/** A readable message for a failed upload: the server's own error, else what the status means. */
export function uploadErrorMessage(status: number, responseText: string): string {
  let error = "";
  try {
    const body: unknown = JSON.parse(responseText);
    if (body && typeof body === "object" && typeof (body as { error?: unknown }).error === "string") {
      error = (body as { error: string }).error;
    }
  } catch {
    error = "";
  }
  if (status === 401 || status === 403) return error || "Not authorised: set the API token in Settings.";
  if (status === 413) return error || "The file is larger than the server accepts (MPR_UPLOAD_MAX_BYTES).";
  if (status === 0) return "The upload was cut off (the server closed the connection: is the file over its size limit?).";
  return error || `The server answered ${status}`;
}

/**
 * Send `file`; `onProgress(fraction)` as bytes go out (0..1). Resolves with the registered asset.
 * `signal` aborts the upload (the server drops the partial file).
 */
export function uploadFile(
  file: File,
  onProgress: (fraction: number) => void = () => undefined,
  signal?: AbortSignal,
  makeRequest: () => UploadRequest = () => new XMLHttpRequest() as unknown as UploadRequest,
): Promise<UploadResult> {
  return new Promise((resolve, reject) => {
    const xhr = makeRequest();
    xhr.open("POST", uploadUrl(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable && ev.total > 0) onProgress(Math.min(1, ev.loaded / ev.total));
    };
    xhr.onload = () => {
      if (xhr.status === 201 || xhr.status === 200) {
        try {
          resolve(JSON.parse(xhr.responseText) as UploadResult);
        } catch {
          reject(new ApiError("The server's answer to the upload was not readable."));
        }
        return;
      }
      reject(new ApiError(uploadErrorMessage(xhr.status, xhr.responseText)));
    };
    xhr.onerror = () => reject(new ApiError(uploadErrorMessage(0, "")));
    xhr.onabort = () => reject(new ApiError("Upload cancelled."));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}
