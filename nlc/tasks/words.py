"""The word list of RULER's "words" needles and keys, pinned in the repository.

RULER (``scripts/data/synthetic/niah.py``) forms every ``"{adjective}-{noun}"`` from
wonderwords' ``assets/adjectivelist.txt`` and ``assets/nounlist.txt`` (PyPI ``wonderwords``
3.0.1, MIT licence; file sha256 ``66814d46…4131`` and ``8d88b3eb…5bc9``), sorted and
deduplicated. We pin a subset so nothing is fetched at run time: every 7th of the
910 sorted distinct adjectives (130) and every 26th of the 6782 sorted distinct
nouns (261), i.e. 33,930 words instead of RULER's 6,171,620.
"""
from __future__ import annotations

ADJECTIVES = """
Early abiding abounding absurd acoustic adjoining ahead aloof animated arrogant
available bashful big blue-eyed brainy bright callous changeable chunky cloudy
comfortable courageous crooked curved damp deadpan defeated deranged difficult
disillusioned doubtful dusty easy elderly enchanting equable excellent fabulous
fanatical fearless fine flippant foregoing fresh futuristic gaudy gleaming gorgeous
grieving guarded hallowed harmonious hellish hilarious honorable humorous hysterical
illustrious imported innate itchy jolly kaput labored laughable level lonely lovely
luxuriant magenta maniacal meek miniature momentous mute nauseating nice nostalgic nutty
observant old-fashioned organic overrated parched periodic placid poised pretty
psychotic quack quixotic rampant receptive repulsive ripe rough sable scary sedate sharp
silent slimy smoggy solid spicy squalid statuesque stingy subsequent swanky tacit tangy
teeny terrible thoughtful tired trashy ugliest unbecoming uninterested uptight various
vigorous waggish wasteful wet wild womanly wrathful young
""".split()

NOUNS = """
ATM accompanist activity advent aglet alcove alphabet analogy announcement ape apse
armpit asphalt athletics authorisation backburn balcony bar basin bean behalf bias
birdhouse blister bog booster bow bratwurst broad bucket bunkhouse buyer caliber canoe
carboxyl cartload catch cemetery chalet charset chemotaxis chives chutney clan cleric
cloudburst codling collectivization comics compensation con congo constraint control
copywriter cot courage cravat crewmate croup culvert customer dam dealer deduction
density desire dew difficulty directive disembodiment divan dollop downfall dredger
dueling dysfunction ecology egghead elongation encirclement entirety equity eurocentrism
excerpt experiment eyelashes fame favor ferret fill fisherman flick fog forearm founder
friction fund gamma-ray gazelle gesture gliding goldfish graffiti grassland group
gunpowder hamburger hardhat haversack heater hermit historian honeydew hostel hummus
hydrolyse idiom impostor incubation infrastructure insect integral interviewer island
jellyfish juggernaut kennel kingfish label lane law legacy lever likelihood liquor lock
lotion lyocell mailer manacle many marshland max medicine mesenchyme middleman mine
misreading modeling monument mother-in-law multimedia nanoparticle neon nick norm nun
observatory oil opposition originality ovary package panic parameter party patience
peacoat penny personality photography pigpen pinto plant plot polarisation popcorn
postfix pregnancy prevention probation prohibition prostanoid publisher purple quiche
raffle randomisation readiness recognition refund religion representative respite
revelation riding rocker rowboat sabre salt sausage schema screen second semicircle
servant shape shirt shovel significance sister-in-law slate smock snuck solution
soundness speaker spiderling spouse stack start step-father stock-in-trade strawman
sturgeon subway sunflower surname swell t-shirt tamale taxicab temperature terrace
therapy thug timing tom-tom torte trade transom triangle trust turnip uncertainty update
valley vein vestment viola vol walk wash wealth wet-bar wife wiring workbench wrist
youngster
""".split()

WORDS: tuple[str, ...] = tuple(
    sorted({f"{adjective}-{noun}" for adjective in ADJECTIVES for noun in NOUNS})
)
"""Every adjective-noun pair, sorted (RULER's ``words``, over the pinned subset)."""
