import type { NextConfig } from "next";

const config: NextConfig = {
  // The client package is plain ESM with its declarations: nothing to transpile.
  poweredByHeader: false,
};

export default config;
