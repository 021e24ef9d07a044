"""Fixtures for the genetics tests: the real MT reference and small hand-made files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENOME = Path(os.environ.get("DFM_SHARED_DATA", REPO.parent / "shared" / "data")) / "genome"


@pytest.fixture(scope="session")
def genome_dir() -> Path:
    if not (GENOME / "MT-human.fa").is_file():
        pytest.skip(
            f"real genome files not found at {GENOME} (set DFM_SHARED_DATA or place "
            "shared/data beside the repository)"
        )
    return GENOME


@pytest.fixture(scope="session")
def mt(genome_dir):
    """Paths and settings for the MT reference: fasta, gtf, contig_map, genes."""
    import diffbio_sc as dfm

    gtf = genome_dir / "MT-genes_rCRS.gtf"
    genes = dfm.io.read_gtf(gtf)["gene_name"].dropna().unique().tolist()
    return {
        "fasta": genome_dir / "MT-human.fa",
        "gtf": gtf,
        "contig_map": {"MT": "MT_human"},
        "genes": genes,
    }


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# A 60-base toy contig 'c1' and a two-exon gene on each strand.
TOY_SEQ = "ACGTACGGTTCAGATCCATGAAATTTGGGCCCAAACCCGGGTTTACGATCGATGCATGCA"
TOY_GTF = (
    "\n".join(
        [
            'c1\tt\tgene\t5\t40\t.\t+\t.\tgene_id "P"; gene_name "PLUS";',
            'c1\tt\ttranscript\t5\t40\t.\t+\t.\tgene_id "P"; gene_name "PLUS"; transcript_id "P1";',
            'c1\tt\texon\t5\t14\t.\t+\t.\tgene_id "P"; gene_name "PLUS"; transcript_id "P1"; exon_number "1";',
            'c1\tt\texon\t31\t40\t.\t+\t.\tgene_id "P"; gene_name "PLUS"; transcript_id "P1"; exon_number "2";',
            'c1\tt\tCDS\t7\t14\t.\t+\t0\tgene_id "P"; gene_name "PLUS"; transcript_id "P1";',
            'c1\tt\tCDS\t31\t36\t.\t+\t1\tgene_id "P"; gene_name "PLUS"; transcript_id "P1";',
            'c1\tt\tgene\t42\t58\t.\t-\t.\tgene_id "M"; gene_name "MINUS";',
            'c1\tt\texon\t42\t47\t.\t-\t.\tgene_id "M"; gene_name "MINUS"; transcript_id "M1"; exon_number "2";',
            'c1\tt\texon\t52\t58\t.\t-\t.\tgene_id "M"; gene_name "MINUS"; transcript_id "M1"; exon_number "1";',
        ]
    )
    + "\n"
)


@pytest.fixture
def toy(tmp_path):
    fa = write(tmp_path / "toy.fa", f">c1 toy contig\n{TOY_SEQ[:30]}\n{TOY_SEQ[30:]}\n")
    gtf = write(tmp_path / "toy.gtf", "#!comment line\n" + TOY_GTF)
    return {"fasta": fa, "gtf": gtf, "seq": TOY_SEQ, "dir": tmp_path, "rc": rc, "write": write}


def rc(s: str) -> str:
    return s.translate(str.maketrans("ACGT", "TGCA"))[::-1]
