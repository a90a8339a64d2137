import { useEffect, useId, useRef, useState, type ReactNode } from "react";
import { getToken, isAuthNeeded, onAuthNeeded, onOpenSettings, onTokenChange, openSettings, setToken } from "../lib/settings";
import { autoBadge } from "../lib/format";

export function StatusBadge({ status }: { status: string }) {
  return (
    <span className={`badge badge-${status}`} data-status={status}>
      {status}
    </span>
  );
}

/** An asset's automatic transcoding mark (MPR_AUTO_PRESET), "auto: skipped" with the reason as its tooltip. */
export function AutoBadge({ status, reason }: { status?: string | null; reason?: string | null }) {
  const badge = autoBadge(status, reason);
  if (!badge) return null;
  return (
    <span className={`badge badge-auto badge-auto-${status}`} data-auto={status} title={badge.title}>
      {badge.text}
    </span>
  );
}

export function ProgressBar({ value, label, status }: { value: number; label: string; status?: string }) {
  const pct = Math.max(0, Math.min(100, value || 0));
  return (
    <div
      className={`progress ${status ? `progress-${status}` : ""}`}
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(pct)}
    >
      <div className="progress-fill" style={{ width: `${pct}%` }} />
      <span className="progress-text">{pct.toFixed(pct >= 100 ? 0 : 1)}%</span>
    </div>
  );
}

/** An API error shown to the user, dismissable. */
export function ErrorBanner({ error, onDismiss }: { error: string; onDismiss?: () => void }) {
  if (!error) return null;
  return (
    <div className="error-banner" role="alert">
      <span>{error}</span>
      {onDismiss && (
        <button type="button" className="link" onClick={onDismiss} aria-label="Dismiss error">
          ×
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

/** Settings: the API token, sent as `Authorization: Bearer` when set. */
export function SettingsButton() {
  const [open, setOpen] = useState(false);
  const [value, setValue] = useState(getToken());
  const [saved, setSaved] = useState(false);
  const id = useId();
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (!saved) return;
    const t = setTimeout(() => setSaved(false), 1500);
    return () => clearTimeout(t);
  }, [saved]);
  // the token prompt opens this panel
  useEffect(
    () =>
      onOpenSettings(() => {
        setValue(getToken());
        setOpen(true);
        setTimeout(() => input.current?.focus(), 0);
      }),
    [],
  );
  return (
    <div className="settings">
      <button type="button" aria-expanded={open} onClick={() => setOpen(!open)}>
        Settings
      </button>
      {open && (
        <form
          className="settings-panel"
          onSubmit={(e) => {
            e.preventDefault();
            setToken(value.trim());
            setSaved(true);
          }}
        >
          <label htmlFor={id}>API token</label>
          <input
            id={id}
            ref={input}
            type="password"
            autoComplete="off"
            value={value}
            placeholder="MPR_API_TOKEN (empty: none)"
            onChange={(e) => setValue(e.target.value)}
          />
          <button type="submit">Save token</button>
          {saved && <span className="muted" role="status">Saved</span>}
        </form>
      )}
    </div>
  );
}

/** A number that changes each time a token is saved: effects that load data list it to reload. */
export function useTokenVersion(): number {
  const [version, setVersion] = useState(0);
  useEffect(() => onTokenChange(() => setVersion((v) => v + 1)), []);
  return version;
}

/** True while the server refuses reads for want of the API token (until a token is saved). */
export function useAuthNeeded(): boolean {
  const [needed, setNeeded] = useState(isAuthNeeded);
  useEffect(() => onAuthNeeded(() => setNeeded(true)), []);
  useEffect(() => onTokenChange(() => setNeeded(false)), []);
  return needed;
}

/**
 * Shown when the server refused a read for want of the API token (MPR_API_TOKEN is set): says so
 * and opens Settings; gone once a token is saved (the page then reloads its data).
 */
export function AuthPrompt() {
  const needed = useAuthNeeded();
  if (!needed) return null;
  return (
    <section className="auth-prompt" aria-label="Token required" data-testid="auth-prompt">
      <p>
        <strong>This MPR server needs its API token.</strong> Nothing can be shown until you enter the token the
        server was started with (<code>MPR_API_TOKEN</code>). It is kept in this browser only.
      </p>
      <button type="button" className="primary" onClick={openSettings}>
        Enter API token
      </button>
    </section>
  );
}

export function Header({ current }: { current: "timeline" | "chunker" }) {
  return (
    <header className="top">
      <a className="brand" href="/">
        MPR
      </a>
      <nav aria-label="Main">
        <a href="/" aria-current={current === "timeline" ? "page" : undefined}>
          Timeline
        </a>
        <a href="/chunker/" aria-current={current === "chunker" ? "page" : undefined}>
          Chunker
        </a>
        <a href="/graphql">GraphQL</a>
        <a href="/admin">Admin</a>
      </nav>
      <SettingsButton />
    </header>
  );
}

/** Connection state of a live stream, for the header of a panel. */
export function LiveIndicator({ state, error }: { state: string; error?: string }) {
  const text =
    state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : state === "unauthenticated" ? "needs token" : state;
  return (
    <span className={`live live-${state}`} role="status" data-state={state} title={error || undefined}>
      <span className="dot" aria-hidden="true" /> {text}
    </span>
  );
}
