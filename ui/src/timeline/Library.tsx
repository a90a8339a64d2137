import { useEffect, useId, useRef, useState } from "react";
import { AutoBadge, Empty, StatusBadge } from "../components/common";
import { scanMediaFolder, type AssetFilter, type ScanResult } from "../lib/api";
import { errorMessage } from "../lib/graphql";
import { duration } from "../lib/format";
import { showingText } from "../lib/paging";
import type { Asset } from "../lib/types";
import { LOCKED_LIBRARY, libraryView } from "./panels";
import { UploadButton } from "./UploadButton";

/** How long the search box waits for more typing before asking the server. */
const SEARCH_DELAY_MS = 300;

interface Props {
  /** The pages loaded so far, filtered by the server. */
  assets: Asset[];
  /** How many assets match the filters in all. */
  total: number;
  loading: boolean;
  /** Reads are refused for want of the API token: the library is locked, not empty. */
  locked: boolean;
  /** True when the shown list is filtered (a search, a kind or a status). */
  filtered: boolean;
  selectedId: string | null;
  onSelect(asset: Asset): void;
  onFilter(filter: AssetFilter): void;
  onLoadMore(): void;
  onScanned(): Promise<void>;
  onError(message: string): void;
}

export function Library(props: Props) {
  const { assets, total, loading, locked, filtered, selectedId, onSelect, onFilter, onLoadMore, onScanned, onError } = props;
  const [query, setQuery] = useState("");
  const [kind, setKind] = useState("");
  const [status, setStatus] = useState("");
  const [scanning, setScanning] = useState(false);
  const [scan, setScan] = useState<ScanResult | null>(null);
  const ids = { q: useId(), kind: useId(), status: useId() };
  const view = libraryView({ locked, loading, shown: assets.length, total, filtered });

  // The server filters: a new kind/status asks at once, typing in the search box after a pause.
  const sent = useRef({ search: "", kind: "", status: "" });
  useEffect(() => {
    const next = { search: query.trim(), kind, status };
    const last = sent.current;
    if (next.search === last.search && next.kind === last.kind && next.status === last.status) return;
    const timer = setTimeout(
      () => {
        sent.current = next;
        onFilter(next);
      },
      next.search === last.search ? 0 : SEARCH_DELAY_MS,
    );
    return () => clearTimeout(timer);
  }, [query, kind, status, onFilter]);

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
        <UploadButton onUploaded={onScanned} onError={onError} />
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
      {view === "locked" ? (
        <Empty>{LOCKED_LIBRARY}</Empty>
      ) : view === "loading" ? (
        <Empty>Loading assets…</Empty>
      ) : view === "empty" ? (
        <Empty>No assets yet. Upload video or audio files, or put them in the media folder: MPR finds those on its own after a minute or two (or press “Scan media folder”).</Empty>
      ) : view === "no-match" ? (
        <Empty>No asset matches these filters.</Empty>
      ) : (
        <>
          <ul className="assets" aria-label="Assets" aria-busy={loading}>
            {assets.map((a) => (
              <li key={a.id}>
                <button
                  type="button"
                  className="asset"
                  aria-pressed={a.id === selectedId}
                  data-asset={a.filename}
                  onClick={() => onSelect(a)}
                >
                  <span className="asset-name">{a.filename}</span>
                  <span className="asset-meta">
                    <span className={`kind kind-${a.kind}`}>{a.kind}</span> {duration(a.duration)}{" "}
                    <StatusBadge status={a.status} /> <AutoBadge status={a.autoStatus} reason={a.autoReason} />
                  </span>
                  {a.path !== a.filename && <span className="muted asset-path">{a.path}</span>}
                </button>
              </li>
            ))}
          </ul>
          <div className="row library-more">
            <span className="muted" role="status" data-testid="asset-count" data-shown={assets.length} data-total={total}>
              {showingText(assets.length, total)}
            </span>
            {assets.length < total && (
              <button type="button" onClick={onLoadMore} disabled={loading}>
                {loading ? "Loading…" : "Load more"}
              </button>
            )}
          </div>
        </>
      )}
    </section>
  );
}
