"""Open the pipeline's HTML pages in headless Chromium; save screenshots; fail on broken images or console errors.

    python benchmarks/check_pages.py [results/examples.html results/plots.html ...] [--out benchmarks/screenshots]
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(pages: list[Path] = typer.Argument(None, help="pages to check (default: results/*.html)"),
         out: Path = typer.Option(Path("benchmarks/screenshots"), help="where screenshots go"),
         width: int = typer.Option(700, help="screenshots are scaled down to this width (smaller files)")) -> None:
    from PIL import Image

    from cmcr.pages import check_page

    pages = pages or sorted(Path("results").glob("*.html"))
    failed = 0
    for page in pages:
        result = check_page(page, screenshot=out / f"{page.stem}.png", size=(1200, 3000))
        status = "ok" if result.ok else "FAILED"
        failed += not result.ok
        with Image.open(result.screenshot) as shot:
            small = shot.convert("RGB").resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
        small.quantize(128).save(result.screenshot, optimize=True)  # a palette PNG: a fraction of the size
        typer.echo(f"{page}: {status}; images {result.images_ok}/{result.images}, console errors "
                   f"{len(result.console_errors)}; screenshot {result.screenshot}")
        for error in result.console_errors:
            typer.echo(f"  {error}")
    raise typer.Exit(1 if failed else 0)


if __name__ == "__main__":
    app()
