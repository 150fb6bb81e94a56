// Text from checks (messages, labels, tool output) goes into HTML and XML
// renderings; it is made safe for both here, in one place.

/** ANSI CSI sequences (colours, cursor moves) that tool output may carry; meaningless in a file. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding ESC is the point.
const ANSI_CSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

/**
 * Whether a code point is an XML 1.0 `Char`: tab, LF, CR and everything from
 * U+0020 except surrogates (a lone one arrives here on its own) and U+FFFE/FFFF.
 * Other characters are forbidden even escaped; HTML calls them parse errors.
 */
function isXmlChar(codePoint: number): boolean {
  if (codePoint < 0x20) return codePoint === 0x09 || codePoint === 0x0a || codePoint === 0x0d;
  if (codePoint >= 0xd800 && codePoint <= 0xdfff) return false;
  return codePoint !== 0xfffe && codePoint !== 0xffff;
}

/** Strips ANSI sequences and replaces characters no XML document may hold with U+FFFD. */
export function sanitizeText(text: string): string {
  let out = "";
  for (const ch of text.replace(ANSI_CSI, "")) out += isXmlChar(ch.codePointAt(0) ?? 0) ? ch : "\ufffd";
  return out;
}

const ENTITIES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * Escapes text for element content and quoted attribute values alike, in HTML
 * and in XML (both accept `&#39;`).
 */
export function escapeMarkup(text: string): string {
  return sanitizeText(text).replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}
