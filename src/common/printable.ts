// Text that came from a peer or a file, made safe to print: control characters escaped (so it
// cannot move the cursor, recolour a terminal or forge a log line) and long text cut.
// docs/security.md says where it is used.

/** Longest text shown by default, in characters (after escaping). */
export const PRINTABLE_MAX = 200;

/**
 * `text` with C0 and C1 control characters, DEL and the Unicode line, paragraph and
 * direction-override marks written as \n, \t, \e or \u{…}, cut to about `max` characters with
 * the number of characters left out.
 */
export function printable(text: string, max = PRINTABLE_MAX): string {
  let out = "";
  let i = 0;
  for (; i < text.length && out.length < max; i++) out += escapeChar(text.charCodeAt(i));
  return i < text.length ? `${out}… (${text.length - i} more characters)` : out;
}

function escapeChar(c: number): string {
  if (c === 0x0a) return "\\n";
  if (c === 0x09) return "\\t";
  if (c === 0x0d) return "\\r";
  if (c === 0x1b) return "\\e";
  const control = c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
  return control ? `\\u{${c.toString(16)}}` : String.fromCharCode(c);
}
