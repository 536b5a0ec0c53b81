"""A small corpus with known answers, for retrieval quality (keyword, dense, hybrid)."""

from __future__ import annotations

from pathlib import Path

FILES = {
    "volcanoes.txt": "Volcanoes erupt when magma rises through cracks in the crust. Lava flows can bury villages.",
    "baking.txt": "To bake sourdough bread, feed the starter, knead the dough and let it rise overnight before baking.",
    "football.txt": "The striker scored twice in the final minutes and the team won the championship trophy.",
    "astronomy.txt": "Jupiter is the largest planet in the solar system and has dozens of moons, including Europa.",
    "gardening.txt": "Water tomato plants deeply and give them six hours of sunlight; prune the suckers weekly.",
    "finance.txt": "The central bank raised interest rates to curb inflation, and mortgage costs went up.",
    "medicine.txt": "Antibiotics treat bacterial infections but are useless against viruses such as influenza.",
    "travel.txt": "The night train from Vienna to Venice crosses the Alps and arrives early in the morning.",
    "cats.txt": "Cats sleep for up to sixteen hours a day and purr when they are content.",
    "computers.txt": "A CPU cache keeps recently used memory close to the processor core to cut latency.",
    "refunds.txt": "Customers may return a product within 30 days of purchase for a full refund to their card.",
    "oceans.txt": "Coral reefs grow in warm shallow seas and shelter a quarter of all marine fish species.",
}

# (query, the file that answers it). KEYWORD queries share rare words with their answer;
# PARAPHRASE queries share almost none (dense retrieval has to find them).
KEYWORD = [
    ("sourdough starter", "baking.txt"),
    ("Jupiter moons Europa", "astronomy.txt"),
    ("night train Vienna Venice", "travel.txt"),
    ("antibiotics influenza", "medicine.txt"),
    ("CPU cache latency", "computers.txt"),
]
PARAPHRASE = [
    ("how long do kittens doze", "cats.txt"),
    ("can I get my money back after buying something", "refunds.txt"),
    ("molten rock exploding from a mountain", "volcanoes.txt"),
    ("soccer goal scorer wins the cup", "football.txt"),
    ("monetary policy and home loans", "finance.txt"),
]


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (folder / name).write_text(text)
    return folder
