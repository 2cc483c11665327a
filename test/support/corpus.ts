import { Document, HeadingLevel, Packer, Paragraph } from 'docx';
import { PDFDocument, StandardFonts } from 'pdf-lib';

/** Builds real files of each supported format, so the parsers are exercised on what users upload. */
export async function pdfFile(pages: string[][]): Promise<Buffer> {
  const pdf = await PDFDocument.create();
  const font = await pdf.embedFont(StandardFonts.Helvetica);
  for (const lines of pages) {
    const page = pdf.addPage([595, 842]);
    lines.forEach((line, i) => page.drawText(line, { x: 50, y: 780 - i * 18, size: 12, font }));
  }
  return Buffer.from(await pdf.save());
}

export async function docxFile(sections: { heading: string; paragraphs: string[] }[]): Promise<Buffer> {
  const doc = new Document({
    sections: [
      {
        children: sections.flatMap((s) => [
          new Paragraph({ text: s.heading, heading: HeadingLevel.HEADING_1 }),
          ...s.paragraphs.map((p) => new Paragraph({ text: p })),
        ]),
      },
    ],
  });
  return Packer.toBuffer(doc);
}

export const htmlFile = (title: string, heading: string, paragraphs: string[]): Buffer =>
  Buffer.from(
    `<!doctype html><html><head><title>${title}</title></head><body><h1>${heading}</h1>${paragraphs.map((p) => `<p>${p}</p>`).join('')}</body></html>`,
  );

export const textFile = (s: string): Buffer => Buffer.from(s);
