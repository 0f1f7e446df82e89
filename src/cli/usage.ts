// What every command shares: the exit codes, the usage error (exit code 2) and the checks of
// option values and files that name what is wrong. docs/usage.md.

import { constants, readFileSync } from "node:fs";
import { access, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

export const EXIT_OK = 0;
/** The run finished but failed what it checked (trace mismatches, a failed migration). */
export const EXIT_FAILED = 1;
/** Bad input or usage: nothing was run, or the input was rejected. */
export const EXIT_BAD_INPUT = 2;
/** Stopped by Ctrl-C (128 + SIGINT), as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** A wrong option, a missing argument or unreadable input: exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A non-negative integer option, or a usage error naming it. */
export function integerOption(command: string, name: string, text: string | undefined, min = 0): number | undefined {
  if (text === undefined) return undefined;
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new UsageError(`${command}: --${name} expects a whole number, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${command}: --${name} must be at least ${min}, got ${text}`);
  return n;
}

/** What went wrong with a file, in words. */
export function fileProblem(e: unknown): string {
  switch ((e as NodeJS.ErrnoException).code) {
    case "ENOENT":
      return "no such file or directory";
    case "EISDIR":
      return "is a directory";
    case "ENOTDIR":
      return "a part of the path is not a directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    default:
      return (e as Error).message;
  }
}

/** A usage error naming `path` unless it is a regular file this process can read. */
export async function checkReadable(command: string, path: string): Promise<void> {
  try {
    if ((await stat(path)).isDirectory()) throw Object.assign(new Error(), { code: "EISDIR" });
    await access(path, constants.R_OK);
  } catch (e) {
    throw new UsageError(`${command}: cannot read ${path}: ${fileProblem(e)}`);
  }
}

/** A usage error naming `path` unless it can be written: not a directory, in a writable one. */
export async function checkWritable(command: string, path: string): Promise<void> {
  try {
    const existing = await stat(path).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e)));
    if (existing?.isDirectory()) throw Object.assign(new Error(), { code: "EISDIR" });
    await access(existing ? path : dirname(resolve(path)), constants.W_OK);
  } catch (e) {
    throw new UsageError(`${command}: cannot write ${path}: ${fileProblem(e)}`);
  }
}

/** The bytes of a file an option names, or a usage error naming the option and the file. */
export function readInput(command: string, option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new UsageError(`${command}: ${option} ${file}: ${fileProblem(e)}`);
  }
}
