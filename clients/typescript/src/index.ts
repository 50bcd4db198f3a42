export { DbxClient, RowStream, isRunning } from "./client.js";
export type {
  ArrowOptions,
  CacheMode,
  ClientOptions,
  PagesOptions,
  QueryResult,
  RunOptions,
  SubmitOptions,
  WaitOptions,
} from "./client.js";
export { DbxError } from "./errors.js";
export { longsAsBigInt } from "./cells.js";
export type * from "./types.js";
