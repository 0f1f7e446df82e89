// What every command shares: the usage error (exit code 2) and option parsing that turns
// node:util's errors into messages naming the option.

import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";

export const EXIT_OK = 0;
/** The run finished but failed what it checked (trace mismatches, a failed migration). */
export const EXIT_FAILED = 1;
/** Bad input or usage: nothing was run, or the input was rejected. */
export const EXIT_BAD_INPUT = 2;

/** A wrong option, a missing argument or unreadable input: exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

export function parseOptions<T extends Options>(command: string, argv: string[], options: T, positionals = 0) {
  try {
    const parsed = parseArgs({ args: argv, options, allowPositionals: positionals > 0, strict: true });
    if (parsed.positionals.length > positionals) {
      throw new UsageError(`${command}: unexpected argument ${JSON.stringify(parsed.positionals[positionals])}`);
    }
    return parsed;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${command}: ${(e as Error).message}`);
  }
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
