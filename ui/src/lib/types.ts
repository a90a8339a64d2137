export type JobStatus = "pending" | "processing" | "completed" | "failed" | "cancelled";
export const FINAL: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"]);

export interface Asset {
  id: string;
  path: string;
  filename: string;
  kind: string;
  status: string;
  size: number | null;
  duration: number | null;
  container: string | null;
  videoCodec: string | null;
  audioCodec: string | null;
  width: number | null;
  height: number | null;
  fps: number | null;
  comments: string;
  error: string | null;
  /** Automatic transcoding (MPR_AUTO_PRESET): pending, queued or skipped; null when not an auto asset. */
  autoStatus?: string | null;
  /** Why automatic transcoding skipped it. */
  autoReason?: string | null;
  /** Where the browser plays the file (the API's URL: signed when the server has a token). */
  url: string;
  /** The API's thumbnail URL; thumbnailUrl() in api.ts picks the time and width. */
  thumbnailUrl: string;
}

export interface Preset {
  id: string;
  name: string;
  container: string;
  videoCodec: string | null;
  audioCodec: string | null;
  description: string;
}

export interface JobOutput {
  path: string | null;
  size: number | null;
  url: string | null;
}

export interface Chunk {
  index: number;
  start: number;
  end: number;
  status: string;
  worker: string | null;
}

export interface Job {
  id: string;
  status: string;
  progress: number;
  speed: number | null;
  eta: number | null;
  error: string | null;
  trimStart: number | null;
  trimEnd: number | null;
  chunked: boolean;
  chunkSeconds?: number | null;
  chunkWorkers?: number | null;
  createdAt: string | null;
  sourceAsset: { id: string; filename: string; duration: number | null; fps?: number | null } | null;
  preset: { id: string; name: string } | null;
  output: JobOutput | null;
  /** output size / source size of a completed job; null when unknown (e.g. the source was deleted) */
  sizeRatio?: number | null;
  chunks?: Chunk[];
}
