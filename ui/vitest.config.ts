import { defineConfig } from "vitest/config";

// Unit tests of the UIs' pure logic (reducers, trim math, formatters, GraphQL and gRPC-Web
// stream handling), in Node: `npm test` or `make -C ui test`. The browser itself is covered by
// the Playwright tests in ../tests/ui. A separate config, so the Vite build config stays as it is.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
    // a few small files of pure functions: one worker thread, no per-file isolation, is the
    // fastest on a busy machine (~2 s); tests that touch a global (localStorage) restore it
    pool: "threads",
    maxWorkers: 1,
    isolate: false,
    watch: false,
    testTimeout: 10_000,
  },
});
