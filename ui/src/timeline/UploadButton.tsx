import { useRef, useState } from "react";
import { errorMessage } from "../lib/graphql";
import { MEDIA_ACCEPT, uploadFile, type UploadResult } from "../lib/upload";

interface Props {
  /** Called after each uploaded file is registered (refreshes the library). */
  onUploaded(): Promise<void>;
  onError(message: string): void;
}

/** "Upload" in the library: sends the chosen files one by one into MEDIA_IN, with progress. */
export function UploadButton({ onUploaded, onError }: Props) {
  const input = useRef<HTMLInputElement>(null);
  const abort = useRef<AbortController | null>(null);
  const [progress, setProgress] = useState<{ name: string; fraction: number } | null>(null);
  const [last, setLast] = useState<UploadResult | null>(null);

  const send = async (files: File[]) => {
    for (const file of files) {
      const controller = new AbortController();
      abort.current = controller;
      setProgress({ name: file.name, fraction: 0 });
      try {
        const result = await uploadFile(file, (fraction) => setProgress({ name: file.name, fraction }), controller.signal);
        setLast(result);
        await onUploaded();
      } catch (err) {
        onError(`${file.name}: ${errorMessage(err)}`);
        if (controller.signal.aborted) break;
      }
    }
    abort.current = null;
    setProgress(null);
  };

  return (
    <>
      <input
        ref={input}
        type="file"
        multiple
        accept={MEDIA_ACCEPT}
        hidden
        aria-label="Files to upload"
        data-testid="upload-input"
        onChange={(e) => {
          const files = Array.from(e.target.files ?? []);
          e.target.value = "";
          if (files.length) void send(files);
        }}
      />
      {progress ? (
        <span className="upload-progress" role="status" data-testid="upload-progress">
          <progress max={1} value={progress.fraction} aria-label={`Uploading ${progress.name}`} />{" "}
          {Math.round(progress.fraction * 100)}% {progress.fraction >= 1 ? "· probing…" : ""}
          <button type="button" onClick={() => abort.current?.abort()}>
            Cancel
          </button>
        </span>
      ) : (
        <button type="button" onClick={() => input.current?.click()} title="Upload video or audio files into the media folder">
          Upload
        </button>
      )}
      {last && !progress && (
        <span className="muted" data-testid="upload-result">
          {last.renamed ? `uploaded as ${last.path}` : `uploaded ${last.path}`} ({last.status})
        </span>
      )}
    </>
  );
}
