import { resolve } from "node:path";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Two entry pages: the Timeline UI at / and the Chunker UI at /chunker/.
// The build goes into the Python package (mpr/static), served by the API.
const api = process.env.MPR_API ?? "http://127.0.0.1:8702";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: resolve(import.meta.dirname, "../mpr/static"),
    emptyOutDir: true,
    sourcemap: false,
    rolldownOptions: {
      // a slow shared machine is not a build problem worth a warning
      checks: { bundlerTimings: false },
      input: {
        main: resolve(import.meta.dirname, "index.html"),
        chunker: resolve(import.meta.dirname, "chunker/index.html"),
      },
    },
  },
  server: {
    proxy: {
      "/graphql": { target: api, ws: true },
      "/grpc": api,
      "/api": api,
      "/media": api,
    },
  },
});
