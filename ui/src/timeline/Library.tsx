import { useId, useMemo, useState } from "react";
import { Empty, StatusBadge } from "../components/common";
import { scanMediaFolder, type ScanResult } from "../lib/api";
import { errorMessage } from "../lib/graphql";
import { duration } from "../lib/format";
import type { Asset } from "../lib/types";

interface Props {
  assets: Asset[];
  loading: boolean;
  selectedId: string | null;
  onSelect(id: string): void;
  onScanned(): Promise<void>;
  onError(message: string): void;
}

export function Library({ assets, loading, selectedId, onSelect, onScanned, onError }: Props) {
  const [query, setQuery] = useState("");
  const [kind, setKind] = useState("");
  const [status, setStatus] = useState("");
  const [scanning, setScanning] = useState(false);
  const [scan, setScan] = useState<ScanResult | null>(null);
  const ids = { q: useId(), kind: useId(), status: useId() };

  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    return assets.filter(
      (a) =>
        (!kind || a.kind === kind) &&
        (!status || a.status === status) &&
        (!q || a.filename.toLowerCase().includes(q) || a.path.toLowerCase().includes(q) || (a.comments ?? "").toLowerCase().includes(q)),
    );
  }, [assets, query, kind, status]);

  const runScan = async () => {
    setScanning(true);
    try {
      setScan(await scanMediaFolder());
      await onScanned();
    } catch (err) {
      onError(errorMessage(err));
    } finally {
      setScanning(false);
    }
  };

  return (
    <section className="panel library" aria-labelledby="library-title">
      <div className="panel-head">
        <h2 id="library-title">Library</h2>
        <button type="button" className="primary" onClick={runScan} disabled={scanning}>
          {scanning ? "Scanning…" : "Scan media folder"}
        </button>
      </div>
      {scan && (
        <p className="notice" role="status" data-testid="scan-result">
          Found {scan.found} · registered {scan.registered} · skipped {scan.skipped}
        </p>
      )}
      <div className="filters">
        <label htmlFor={ids.q}>Search</label>
        <input id={ids.q} type="search" value={query} placeholder="name, path or comment" onChange={(e) => setQuery(e.target.value)} />
        <label htmlFor={ids.kind}>Kind</label>
        <select id={ids.kind} value={kind} onChange={(e) => setKind(e.target.value)}>
          <option value="">All kinds</option>
          <option value="video">Video</option>
          <option value="audio">Audio</option>
        </select>
        <label htmlFor={ids.status}>Status</label>
        <select id={ids.status} value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">All statuses</option>
          <option value="ready">Ready</option>
          <option value="pending">Pending</option>
          <option value="error">Error</option>
          <option value="missing">Missing</option>
        </select>
      </div>
      {loading && assets.length === 0 ? (
        <Empty>Loading assets…</Empty>
      ) : assets.length === 0 ? (
        <Empty>No assets yet. Put video or audio files in the media folder and press “Scan media folder”.</Empty>
      ) : shown.length === 0 ? (
        <Empty>No asset matches these filters.</Empty>
      ) : (
        <ul className="assets" aria-label="Assets">
          {shown.map((a) => (
            <li key={a.id}>
              <button
                type="button"
                className="asset"
                aria-pressed={a.id === selectedId}
                data-asset={a.filename}
                onClick={() => onSelect(a.id)}
              >
                <span className="asset-name">{a.filename}</span>
                <span className="asset-meta">
                  <span className={`kind kind-${a.kind}`}>{a.kind}</span> {duration(a.duration)}{" "}
                  <StatusBadge status={a.status} />
                </span>
                {a.path !== a.filename && <span className="muted asset-path">{a.path}</span>}
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
