import { convert as htmlToText } from 'html-to-text';
import mammoth from 'mammoth';
import { marked, type Token } from 'marked';
import { extractText, getDocumentProxy } from 'unpdf';
import { FORMAT_BY_EXTENSION, formatOf } from '../../common/documents';

/** A run of text with where it sits in the source: its page (PDF) and the heading it falls under. */
export interface Block {
  text: string;
  page: number | null;
  heading: string | null;
}

/** The document cannot be parsed (corrupt, unsupported); retrying will not help, the rest of the batch goes on. */
export class UnparseableDocumentError extends Error {}

/** Markdown (and HTML rendered to Markdown-style headings) to blocks, each carrying its nearest heading. */
function markdownBlocks(md: string): Block[] {
  const blocks: Block[] = [];
  let heading: string | null = null;
  const visit = (tokens: Token[]) => {
    for (const t of tokens) {
      if (t.type === 'heading') {
        heading = (t as { text: string }).text.trim();
        blocks.push({ text: heading, page: null, heading });
      } else if (t.type === 'space' || t.type === 'hr') {
        continue;
      } else {
        const text = ('text' in t && typeof t.text === 'string' && t.type !== 'list' ? t.text : t.raw).trim();
        if (text) blocks.push({ text, page: null, heading });
      }
    }
  };
  visit(marked.lexer(md));
  return blocks;
}

function htmlBlocks(html: string): Block[] {
  const headings = [1, 2, 3, 4, 5, 6].map((level) => ({
    selector: `h${level}`,
    format: 'mdHeading',
    options: { level },
  }));
  const md = htmlToText(html, {
    wordwrap: false,
    selectors: [...headings, { selector: 'a', options: { ignoreHref: true } }, { selector: 'img', format: 'skip' }],
    formatters: {
      // Keep headings recognisable so chunks can cite the section they come from.
      mdHeading: (elem, walk, builder, options) => {
        builder.openBlock({ leadingLineBreaks: 2 });
        builder.addInline(`${'#'.repeat((options as { level?: number }).level ?? 1)} `);
        walk(elem.children, builder);
        builder.closeBlock({ trailingLineBreaks: 2 });
      },
    },
  });
  return markdownBlocks(md);
}

function textBlocks(text: string): Block[] {
  return text
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => ({ text: p, page: null, heading: null }));
}

async function pdfBlocks(bytes: Uint8Array): Promise<Block[]> {
  // pdf.js refuses Buffer (a Uint8Array subclass) and wants a plain Uint8Array view of the same bytes.
  const pdf = await getDocumentProxy(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const { text } = await extractText(pdf, { mergePages: false });
  return (text as string[]).flatMap((pageText, i) => textBlocks(pageText).map((b) => ({ ...b, page: i + 1 })));
}

/** Built-in parsers for PDF, DOCX, HTML, Markdown and plain text. */
export async function parseBuiltin(name: string, bytes: Uint8Array): Promise<Block[]> {
  const format = formatOf(name);
  if (!format)
    throw new UnparseableDocumentError(
      `unsupported file type: ${name} (supported: ${Object.keys(FORMAT_BY_EXTENSION).join(', ')})`,
    );
  try {
    switch (format) {
      case 'pdf':
        return await pdfBlocks(bytes);
      case 'docx': {
        const { value } = await mammoth.convertToHtml({ buffer: Buffer.from(bytes) });
        return htmlBlocks(value);
      }
      case 'html':
        return htmlBlocks(Buffer.from(bytes).toString('utf8'));
      case 'markdown':
        return markdownBlocks(Buffer.from(bytes).toString('utf8'));
      case 'text':
        return textBlocks(Buffer.from(bytes).toString('utf8'));
    }
  } catch (err) {
    throw new UnparseableDocumentError(`could not parse ${format.toUpperCase()} ${name}: ${(err as Error).message}`);
  }
}
