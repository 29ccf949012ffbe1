"""Real English text for the synthetic short-video world: ambiguous words, their senses, distractors, plain topics.

Pure data (plus a few frozen dataclasses and a checker); no side effects, no randomness. The generator
(``crops_ray.world.generator``) combines these pieces with :data:`TITLE_FORMATS` and :data:`CAPTION_OPENERS`
into video titles and captions, and derives search queries and graded relevance from them.

- :data:`WORDS`: 12 ambiguous query words, each with 2-3 senses, the DOMINANT sense first (the one a biased
  search engine over-exposes). Every sense has 8 subtopics (facets), one realistic query per subtopic, aliases
  that name the thing without the ambiguous word, 8 true facts and a few hashtags.
- :data:`DOMAINS`: domain key -> description. Senses of different words share domains ("wildlife": the jaguar,
  the python, the bat, ...), so they compete with near-duplicates.
- :data:`DISTRACTORS`: one hard-negative :class:`Topic` per domain used by a sense (``"wildlife/distractor"``:
  "leopard cubs playing"), never mentioning any ambiguous word.
- :data:`PLAIN_TOPICS`: 10 unambiguous everyday topics, each in its own domain (not used by any sense).

:func:`check_vocabulary` validates every invariant; it is not run at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sense:
    word: str  # the ambiguous query word, lower case
    name: str  # short sense id; key is f"{word}/{name}"
    label: str  # human label
    domain: str  # a key of DOMAINS
    sense_query: str  # 2-4 word query naming this sense, containing the word
    subtopics: tuple[str, ...]  # exactly 8 facets, >= 5 contain the word
    subtopic_queries: tuple[str, ...]  # exactly 8, one per subtopic, each contains the word
    aliases: tuple[str, ...]  # 3-5 ways to name the thing without the word
    facts: tuple[str, ...]  # 8 true sentences, at most half contain the word
    hashtags: tuple[str, ...]  # 4-6, lower case, without '#'

    @property
    def key(self) -> str:
        return f"{self.word}/{self.name}"


@dataclass(frozen=True)
class Word:
    word: str
    senses: tuple[Sense, ...]  # dominant sense first


@dataclass(frozen=True)
class Topic:
    key: str  # e.g. "cooking/pasta" or "wildlife/distractor"
    domain: str
    subtopics: tuple[str, ...]  # exactly 8
    subtopic_queries: tuple[str, ...]  # exactly 8, one per subtopic
    facts: tuple[str, ...]  # 8 sentences
    hashtags: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ domains

DOMAINS: dict[str, str] = {
    # domains shared by senses (each has a distractor topic)
    "programming": "software development, programming languages and machine learning tutorials",
    "energy": "electricity generation, power grids and electrical work",
    "toys": "toys, action figures, model kits and collectibles",
    "wildlife": "wild animals, birds, reptiles and animal behaviour",
    "cars": "cars, car culture, restorations and automotive reviews",
    "tech": "consumer electronics, computer hardware, peripherals and gadgets",
    "food": "food, snacks, fruit, drinks and baking",
    "space": "astronomy, planets and space exploration",
    "science": "chemistry experiments, elements and science explainers",
    "music": "musicians, singers, instruments and music lessons",
    "travel": "travel destinations and backpacking in Southeast Asia",
    "outdoors": "freshwater and saltwater fishing and outdoor recreation",
    "construction": "construction sites, heavy machinery and building projects",
    "sports": "bat-and-ball and racket sports, technique and highlights",
    # plain everyday topics, one domain each
    "cooking": "home cooking and Italian pasta recipes",
    "fitness": "home workouts, mobility and bodyweight training",
    "gardening": "vegetable gardening and growing tomatoes",
    "pets": "dog training and puppy care",
    "diy": "woodworking and DIY furniture projects",
    "beauty": "skincare routines and products",
    "finance": "personal budgeting and saving money",
    "gaming": "Minecraft builds, tips and speedruns",
    "photography": "portrait photography and editing",
    "languages": "learning Spanish as a second language",
}


# ------------------------------------------------------------------------------------------------ senses

_TRANSFORMER = Word(
    "transformer",
    (
        Sense(
            word="transformer",
            name="deeplearning",
            label="the neural network architecture",
            domain="programming",
            sense_query="transformer neural network",
            subtopics=(
                "transformer self-attention mechanism",
                "transformer positional encoding",
                "training a small transformer from scratch",
                "transformer encoder versus decoder",
                "multi-head attention in transformers",
                "the original attention paper",
                "vision transformers for image classification",
                "scaling laws for large language models",
            ),
            subtopic_queries=(
                "transformer self attention explained",
                "transformer positional encoding",
                "train transformer from scratch",
                "transformer encoder vs decoder",
                "multi head attention transformer",
                "original transformer paper",
                "vision transformer image classification",
                "transformer scaling laws",
            ),
            aliases=(
                "the attention-based neural network",
                "the architecture behind GPT and BERT",
                "the self-attention model",
                "the sequence model from Google's 2017 paper",
            ),
            facts=(
                "The transformer architecture was introduced by Vaswani and colleagues at Google in 2017.",
                "Self-attention lets every token in a sequence weigh its relationship to every other token.",
                "Large language models such as GPT and BERT are built from stacked attention layers.",
                "Positional encodings tell the model about word order, which attention alone ignores.",
                "Multi-head attention runs several attention operations in parallel and concatenates the results.",
                (
                    "Unlike recurrent networks, a transformer processes "
                    "all tokens of a sequence in parallel during training."
                ),
                "Vision transformers split an image into patches and treat each patch like a token.",
                "The cost of standard self-attention grows quadratically with the length of the input sequence.",
            ),
            hashtags=("machinelearning", "deeplearning", "ai", "nlp", "llm"),
        ),
        Sense(
            word="transformer",
            name="power",
            label="the electrical transformer",
            domain="energy",
            sense_query="electrical power transformer",
            subtopics=(
                "how a power transformer works",
                "step-up transformers at power plants",
                "transformer oil and cooling",
                "utility pole transformer explosions",
                "transformer windings and turns ratio",
                "distribution transformer maintenance",
                "the humming sound of a transformer",
                "substations on the electrical grid",
            ),
            subtopic_queries=(
                "how power transformer works",
                "step up transformer power plant",
                "transformer oil cooling",
                "pole transformer explosion",
                "transformer turns ratio calculation",
                "distribution transformer maintenance",
                "why transformers hum",
                "substation transformer grid",
            ),
            aliases=(
                "the step-down unit on a utility pole",
                "the AC voltage converter",
                "the coil-and-core voltage device",
                "the grid voltage converter",
            ),
            facts=(
                "A transformer transfers electrical energy between circuits through electromagnetic induction.",
                "The ratio of turns in the primary and secondary windings sets how much the voltage changes.",
                (
                    "Step-up units raise voltage at power plants so "
                    "electricity can travel long distances with lower losses."
                ),
                "Transformers only work with alternating current, not steady direct current.",
                (
                    "The steady hum near large units comes from magnetostriction "
                    "in the steel core, at twice the mains frequency."
                ),
                "Mineral oil inside many large units both insulates the windings and carries heat away.",
                "Laminated cores reduce the eddy currents that would otherwise waste energy as heat.",
                (
                    "William Stanley built a practical transformer-based AC "
                    "distribution system in Great Barrington, Massachusetts, in 1886."
                ),
            ),
            hashtags=("electricity", "electrical", "powergrid", "engineering", "energy"),
        ),
        Sense(
            word="transformer",
            name="toys",
            label="the Transformers robot toys and franchise",
            domain="toys",
            sense_query="transformers robot toys",
            subtopics=(
                "optimus prime figure unboxing",
                "vintage g1 transformers collection",
                "transformers masterpiece bumblebee review",
                "converting a transformers figure",
                "transformers studio series megatron",
                "the history of the transformers cartoon",
                "rare transformers toys worth money",
                "transformers movie franchise ranked",
            ),
            subtopic_queries=(
                "optimus prime transformers figure",
                "g1 transformers collection",
                "masterpiece bumblebee transformers",
                "transformers robot to car",
                "transformers studio series megatron",
                "transformers cartoon history",
                "rare transformers toys value",
                "transformers movies ranked",
            ),
            aliases=(
                "the Hasbro robots in disguise",
                "Autobots and Decepticons",
                "the shape-shifting robot figures",
                "Optimus Prime and friends",
            ),
            facts=(
                "Hasbro launched the Transformers toy line in 1984 using molds licensed from Takara in Japan.",
                "The original animated series introduced the heroic Autobots and the villainous Decepticons.",
                "Optimus Prime, leader of the Autobots, was voiced by Peter Cullen in the 1980s cartoon.",
                "Many figures convert from a robot into a vehicle such as a truck, car or jet.",
                "The 2007 live-action film was directed by Michael Bay.",
                "Collectors refer to the original 1980s toy line as Generation 1, or G1.",
                "Bumblebee, a small yellow Autobot, got his own spin-off film in 2018.",
                "Masterpiece figures are high-end collector editions designed to look like the cartoon characters.",
            ),
            hashtags=("transformers", "toys", "actionfigures", "collector", "optimusprime"),
        ),
    ),
)

_PYTHON = Word(
    "python",
    (
        Sense(
            word="python",
            name="programming",
            label="the programming language",
            domain="programming",
            sense_query="python programming language",
            subtopics=(
                "python list comprehensions",
                "python virtual environments",
                "writing python decorators",
                "web scraping with python",
                "python for data analysis with pandas",
                "python dictionaries and sets",
                "automating boring tasks with python",
                "async programming in python",
            ),
            subtopic_queries=(
                "python list comprehension",
                "python virtual environment setup",
                "python decorators tutorial",
                "python web scraping",
                "python pandas data analysis",
                "python dictionary vs set",
                "python automation scripts",
                "python asyncio tutorial",
            ),
            aliases=(
                "Guido van Rossum's language",
                "the language of pandas and Django",
                "CPython",
                "the popular scripting language",
            ),
            facts=(
                "Python was created by Guido van Rossum and first released in 1991.",
                "Indentation, rather than curly braces, defines code blocks in the language.",
                "The official package index, PyPI, hosts hundreds of thousands of open-source libraries.",
                "List comprehensions build a new list from an iterable in a single readable expression.",
                "Python 2 reached its official end of life on January 1, 2020.",
                "The reference interpreter, CPython, is written in C.",
                "Popular web frameworks for the language include Django and Flask.",
                "The language's name comes from the comedy group Monty Python, not from the snake.",
            ),
            hashtags=("python", "coding", "programming", "learntocode", "developer"),
        ),
        Sense(
            word="python",
            name="snake",
            label="the constricting snake",
            domain="wildlife",
            sense_query="python snake",
            subtopics=(
                "ball python feeding schedule",
                "burmese pythons in the everglades",
                "python shedding its skin",
                "reticulated python size record",
                "setting up a ball python enclosure",
                "how pythons constrict their prey",
                "python eggs hatching",
                "handling a pet snake safely",
            ),
            subtopic_queries=(
                "ball python feeding",
                "burmese python everglades",
                "python snake shedding",
                "largest reticulated python",
                "ball python enclosure setup",
                "how pythons constrict prey",
                "python eggs hatching",
                "how to handle pet python",
            ),
            aliases=(
                "the giant constrictor",
                "the constricting snake",
                "the royal constrictor",
                "the nonvenomous constrictor",
            ),
            facts=(
                "Pythons are nonvenomous snakes that kill prey by constriction.",
                "Constriction kills mainly by cutting off blood flow rather than by crushing bones.",
                "Ball pythons curl into a tight ball when threatened, which gives them their name.",
                "The reticulated python of Southeast Asia is often considered the world's longest snake.",
                "Invasive Burmese constrictors have established a breeding population in Florida's Everglades.",
                "Many females coil around their eggs and shiver their muscles to keep the clutch warm.",
                "Heat-sensing pits along the lips help these snakes find warm-blooded prey in the dark.",
                "A healthy captive snake sheds its skin in one piece when the humidity is right.",
            ),
            hashtags=("snakes", "reptiles", "wildlife", "ballpython", "herpetology"),
        ),
    ),
)

_JAGUAR = Word(
    "jaguar",
    (
        Sense(
            word="jaguar",
            name="car",
            label="the British car brand",
            domain="cars",
            sense_query="jaguar luxury car",
            subtopics=(
                "jaguar e-type restoration",
                "jaguar f-type v8 exhaust sound",
                "the all-electric jaguar i-pace",
                "jaguar xj interior review",
                "jaguar's 1950s le mans wins",
                "buying a used jaguar xf",
                "jaguar's 2024 rebrand",
                "classic british sports car road trip",
            ),
            subtopic_queries=(
                "jaguar e type restoration",
                "jaguar f type exhaust",
                "jaguar i pace range",
                "jaguar xj review",
                "jaguar le mans history",
                "used jaguar xf buying guide",
                "jaguar rebrand 2024",
                "classic jaguar road trip",
            ),
            aliases=(
                "the Coventry luxury carmaker",
                "the British marque with the leaping cat badge",
                "the JLR sports saloon brand",
                "the maker of the E-Type",
            ),
            facts=(
                "The brand began in 1922 as the Swallow Sidecar Company, co-founded by William Lyons.",
                "Enzo Ferrari reportedly called the E-Type the most beautiful car ever made.",
                "Jaguar won the 24 Hours of Le Mans five times in the 1950s.",
                "The I-Pace, launched in 2018, was the company's first fully electric car.",
                "Since 2008 the marque has been owned by India's Tata Motors.",
                "The leaping cat hood ornament is known to enthusiasts as the leaper.",
                "The XJ saloon served as the brand's flagship for decades.",
                "In late 2024 Jaguar unveiled a dramatic rebrand ahead of a move to an all-electric lineup.",
            ),
            hashtags=("cars", "carsoftiktok", "luxurycars", "classiccars", "britishcars"),
        ),
        Sense(
            word="jaguar",
            name="animal",
            label="the big cat",
            domain="wildlife",
            sense_query="jaguar big cat",
            subtopics=(
                "jaguar hunting caiman",
                "jaguar cubs in the wild",
                "how jaguars swim",
                "jaguars of the pantanal wetlands",
                "black jaguar caught on camera",
                "jaguar versus leopard differences",
                "the jaguar's bite force",
                "tracking big cats in the amazon",
            ),
            subtopic_queries=(
                "jaguar hunting caiman",
                "jaguar cubs wild",
                "can jaguars swim",
                "pantanal jaguar safari",
                "black jaguar camera trap",
                "jaguar vs leopard",
                "jaguar bite force",
                "jaguar tracking amazon",
            ),
            aliases=(
                "the spotted big cat",
                "Panthera onca",
                "the apex predator of the Amazon",
                "the largest cat in the Americas",
            ),
            facts=(
                (
                    "It is the largest cat in the Americas and the third "
                    "largest in the world after the tiger and the lion."
                ),
                "Jaguars have one of the strongest bites of any big cat relative to their size.",
                "Unlike most cats, they are strong swimmers and often hunt in rivers.",
                "The rosettes on its coat have small spots inside them, unlike a leopard's.",
                "Melanistic individuals look black, but their rosettes are still faintly visible.",
                "Brazil's Pantanal wetland has one of the highest densities of jaguars on Earth.",
                "They often kill prey with a bite through the skull rather than the throat.",
                "Caiman, capybara and deer are among their common prey.",
            ),
            hashtags=("wildlife", "bigcats", "nature", "animals", "amazon"),
        ),
    ),
)

_APPLE = Word(
    "apple",
    (
        Sense(
            word="apple",
            name="tech",
            label="the technology company",
            domain="tech",
            sense_query="apple iphone company",
            subtopics=(
                "apple iphone camera test",
                "apple watch fitness features",
                "switching from android to apple",
                "apple keynote event recap",
                "apple macbook air battery life",
                "apple airpods pro noise cancelling",
                "hidden iphone settings",
                "steve jobs and the first iphone",
            ),
            subtopic_queries=(
                "apple iphone camera test",
                "apple watch fitness tracking",
                "android to apple switch",
                "apple event recap",
                "apple macbook air battery",
                "apple airpods pro review",
                "apple iphone hidden settings",
                "steve jobs apple iphone launch",
            ),
            aliases=(
                "the Cupertino tech giant",
                "the iPhone maker",
                "the company Steve Jobs co-founded",
                "the iPhone and Mac company",
            ),
            facts=(
                "The company was founded in 1976 by Steve Jobs, Steve Wozniak and Ronald Wayne.",
                "The first iPhone was announced by Steve Jobs in January 2007.",
                "Apple's headquarters, Apple Park, is a ring-shaped campus in Cupertino, California.",
                "Macs moved from Intel processors to in-house Arm-based designs starting in 2020.",
                "The App Store opened in 2008 with around 500 apps.",
                "AirPods were first released in December 2016.",
                "In 2018 Apple became the first US public company valued at one trillion dollars.",
                "iOS, the iPhone operating system, gets a major update every autumn.",
            ),
            hashtags=("apple", "iphone", "tech", "gadgets", "techtok"),
        ),
        Sense(
            word="apple",
            name="fruit",
            label="the fruit",
            domain="food",
            sense_query="apple fruit orchard",
            subtopics=(
                "apple picking at an orchard",
                "homemade apple pie from scratch",
                "honeycrisp versus granny smith apples",
                "grafting an apple tree",
                "pressing fresh apple cider",
                "why sliced apples turn brown",
                "storing apples through winter",
                "baked cinnamon apple crumble",
            ),
            subtopic_queries=(
                "apple picking orchard",
                "homemade apple pie recipe",
                "best apple variety for baking",
                "how to graft apple tree",
                "making apple cider at home",
                "why apples turn brown",
                "how to store apples",
                "apple crumble recipe",
            ),
            aliases=(
                "Malus domestica",
                "the orchard fruit",
                "the crisp autumn fruit",
                "the red and green orchard fruit",
            ),
            facts=(
                "There are thousands of named apple varieties grown around the world.",
                "Cut fruit turns brown because an enzyme called polyphenol oxidase reacts with oxygen.",
                "The domesticated tree descends mainly from a wild species in the mountains of Kazakhstan.",
                "Most commercial varieties are propagated by grafting because seeds do not grow true to type.",
                "Honeycrisp was developed at the University of Minnesota and released in 1991.",
                "Granny Smith originated in Australia in the 1860s.",
                "China is the world's largest producer of apples.",
                "Stored in a cold, humid place, many late varieties keep for months.",
            ),
            hashtags=("food", "baking", "fruit", "orchard", "fallvibes"),
        ),
    ),
)

_MERCURY = Word(
    "mercury",
    (
        Sense(
            word="mercury",
            name="planet",
            label="the planet",
            domain="space",
            sense_query="mercury the planet",
            subtopics=(
                "mercury, the sun's closest planet",
                "a day on mercury",
                "mercury's extreme temperatures",
                "the messenger mission to mercury",
                "the apparent retrograde motion of mercury",
                "bepicolombo's journey to mercury",
                "transit of mercury across the sun",
                "craters on the smallest planet",
            ),
            subtopic_queries=(
                "mercury closest planet sun",
                "mercury day length",
                "mercury planet temperature",
                "messenger mission mercury",
                "mercury retrograde motion",
                "bepicolombo mercury mission",
                "transit of mercury",
                "mercury planet craters",
            ),
            aliases=(
                "the innermost planet",
                "the smallest planet in the solar system",
                "the closest planet to the Sun",
                "the swift inner planet",
            ),
            facts=(
                "It is the smallest planet in the solar system and the closest to the Sun.",
                "A year on Mercury lasts about 88 Earth days.",
                "One solar day there lasts about 176 Earth days, longer than its year.",
                "Surface temperatures swing from about 430 degrees Celsius by day to about minus 180 at night.",
                "NASA's MESSENGER spacecraft orbited the planet from 2011 to 2015.",
                "The European-Japanese BepiColombo mission is scheduled to enter orbit around Mercury in late 2026.",
                "The planet has almost no atmosphere, only a thin exosphere.",
                "Water ice is thought to exist in permanently shadowed craters near its poles.",
            ),
            hashtags=("space", "astronomy", "planets", "nasa", "solarsystem"),
        ),
        Sense(
            word="mercury",
            name="element",
            label="the chemical element",
            domain="science",
            sense_query="mercury chemical element",
            subtopics=(
                "liquid mercury in slow motion",
                "old mercury thermometers",
                "mercury poisoning and the mad hatter",
                "why mercury stays liquid",
                "mercury levels in tuna",
                "cleaning up a broken thermometer",
                "mercury amalgam dental fillings",
                "steel ball floating on mercury",
            ),
            subtopic_queries=(
                "liquid mercury slow motion",
                "mercury thermometer how it works",
                "mercury poisoning symptoms",
                "why is mercury liquid",
                "mercury in tuna",
                "broken mercury thermometer cleanup",
                "mercury amalgam fillings",
                "things floating on mercury",
            ),
            aliases=(
                "quicksilver",
                "element 80",
                "Hg",
                "the liquid metal",
            ),
            facts=(
                "Mercury is the only metal that is liquid at standard room temperature.",
                "Its chemical symbol, Hg, comes from the Latin hydrargyrum, meaning watery silver.",
                "The element has atomic number 80.",
                "It is so dense that a steel ball will float on its surface.",
                "Fish high in the food chain, such as swordfish and some tuna, can accumulate methylmercury.",
                "Many countries have phased out mercury thermometers under the Minamata Convention.",
                (
                    "Hat makers in the 1800s breathed its vapors while treating "
                    "felt, which is linked to the phrase mad as a hatter."
                ),
                "Its vapor is toxic to inhale, so spills should never be vacuumed.",
            ),
            hashtags=("science", "chemistry", "periodictable", "experiment", "stem"),
        ),
        Sense(
            word="mercury",
            name="singer",
            label="Freddie Mercury, the singer of Queen",
            domain="music",
            sense_query="freddie mercury singer",
            subtopics=(
                "freddie mercury at live aid 1985",
                "freddie mercury vocal range analysis",
                "the making of bohemian rhapsody",
                "freddie mercury's early life in zanzibar",
                "freddie mercury isolated vocals",
                "freddie mercury's crowd call and response",
                "rami malek's oscar-winning performance",
                "queen's greatest stadium anthems",
            ),
            subtopic_queries=(
                "freddie mercury live aid",
                "freddie mercury vocal range",
                "freddie mercury bohemian rhapsody",
                "freddie mercury childhood zanzibar",
                "freddie mercury isolated vocals",
                "freddie mercury ay oh",
                "rami malek freddie mercury",
                "freddie mercury queen anthems",
            ),
            aliases=(
                "Queen's frontman",
                "Farrokh Bulsara",
                "the voice of Bohemian Rhapsody",
                "the Live Aid showstopper",
            ),
            facts=(
                "He was born Farrokh Bulsara in Zanzibar in 1946.",
                "Freddie Mercury was the lead vocalist of the rock band Queen.",
                (
                    "Queen's 21-minute set at Live Aid in 1985 is often called "
                    "one of the greatest live performances in rock history."
                ),
                "He wrote Bohemian Rhapsody, which was released in 1975.",
                "He also wrote Somebody to Love, Don't Stop Me Now and We Are the Champions.",
                "He died in November 1991 from complications of AIDS.",
                "Rami Malek won an Oscar for playing Freddie Mercury in the 2018 film Bohemian Rhapsody.",
                "His call-and-response vocal improvisations with the crowd became known as the Ay-Oh moments.",
            ),
            hashtags=("queen", "freddiemercury", "rock", "music", "classicrock"),
        ),
    ),
)

_JAVA = Word(
    "java",
    (
        Sense(
            word="java",
            name="programming",
            label="the programming language",
            domain="programming",
            sense_query="java programming language",
            subtopics=(
                "java spring boot rest api",
                "how java garbage collection works",
                "java streams and lambdas",
                "object-oriented programming in java",
                "inside the java virtual machine",
                "java interview coding questions",
                "java multithreading and concurrency",
                "maven and gradle build tools",
            ),
            subtopic_queries=(
                "java spring boot tutorial",
                "java garbage collection",
                "java streams lambda",
                "java oop concepts",
                "jvm java virtual machine",
                "java interview questions",
                "java multithreading tutorial",
                "java maven vs gradle",
            ),
            aliases=(
                "the JVM language",
                "Sun Microsystems' 1995 language",
                "the write-once-run-anywhere language",
                "the language of Spring Boot",
            ),
            facts=(
                "Java was released by Sun Microsystems in 1995, and James Gosling is credited as its creator.",
                (
                    "Programs compile to bytecode that runs on a virtual "
                    "machine, summed up in the slogan write once, run anywhere."
                ),
                "Oracle acquired Sun Microsystems, and with it the language, in 2010.",
                "Memory is managed automatically by a garbage collector.",
                "Lambdas and the Streams API arrived with version 8 in 2014.",
                "Android apps were traditionally written in Java before Kotlin became Google's preferred language.",
                "Spring Boot is one of the most widely used frameworks for building web services on the platform.",
                "A new feature release of the JDK ships every six months.",
            ),
            hashtags=("java", "coding", "programming", "softwareengineering", "backend"),
        ),
        Sense(
            word="java",
            name="coffee",
            label="coffee, as in a cup of java",
            domain="food",
            sense_query="cup of java coffee",
            subtopics=(
                "brewing java at home",
                "java arabica beans",
                "my morning java routine",
                "pour-over java for beginners",
                "cold brew java recipe",
                "diner java and bottomless refills",
                "latte art pouring practice",
                "grinding coffee beans by hand",
            ),
            subtopic_queries=(
                "cup of java at home",
                "java arabica beans",
                "morning java coffee routine",
                "pour over java coffee",
                "cold brew java",
                "bottomless java diner coffee",
                "latte art java",
                "hand grinding java beans",
            ),
            aliases=(
                "a cup of joe",
                "the morning brew",
                "freshly brewed coffee",
                "the caffeinated brew",
            ),
            facts=(
                (
                    "The slang word java for coffee comes from the island "
                    "that became a major coffee producer under Dutch rule."
                ),
                "Dutch colonists began growing coffee on the island in the late 1600s.",
                "Coffee beans are the roasted seeds of a cherry-like fruit.",
                "Arabica and robusta are the two most widely grown coffee species.",
                "Cold brew steeps coffee grounds in cold water for 12 to 24 hours.",
                "Burr grinders produce a more even grind than blade grinders.",
                "A typical 240 ml cup of brewed coffee contains around 95 milligrams of caffeine.",
                "Latte art is poured using steamed milk with a fine, glossy microfoam.",
            ),
            hashtags=("coffee", "coffeetime", "barista", "morningroutine", "caffeine"),
        ),
        Sense(
            word="java",
            name="island",
            label="the Indonesian island",
            domain="travel",
            sense_query="java island indonesia",
            subtopics=(
                "hiking mount bromo on java",
                "java's borobudur temple at sunrise",
                "street food in yogyakarta",
                "east java's ijen blue fire",
                "backpacking across java by train",
                "jakarta city guide",
                "java's rice terraces and villages",
                "batik making in central java",
            ),
            subtopic_queries=(
                "mount bromo java hike",
                "borobudur java sunrise",
                "yogyakarta java street food",
                "ijen crater java",
                "java train travel",
                "jakarta java travel guide",
                "java rice terraces",
                "java batik workshop",
            ),
            aliases=(
                "Indonesia's most populous island",
                "the island home of Jakarta",
                "the volcanic island between Sumatra and Bali",
                "the heart of Indonesia",
            ),
            facts=(
                "Java is the world's most populous island, home to more than 150 million people.",
                "Indonesia's capital, Jakarta, lies on the island's northwest coast.",
                "Borobudur is the largest Buddhist temple in the world and dates from the 9th century.",
                "The island has dozens of volcanoes, including Merapi, one of Indonesia's most active.",
                "Ijen crater is famous for blue flames caused by burning sulfuric gases.",
                "Yogyakarta is known as a centre of traditional Javanese arts such as batik and gamelan.",
                "Mount Bromo sits inside the Tengger caldera and is a popular sunrise viewpoint.",
                "The Hindu temple compound of Prambanan stands near Yogyakarta.",
            ),
            hashtags=("travel", "indonesia", "backpacking", "wanderlust", "asia"),
        ),
    ),
)

_BASS = Word(
    "bass",
    (
        Sense(
            word="bass",
            name="guitar",
            label="the bass guitar",
            domain="music",
            sense_query="bass guitar",
            subtopics=(
                "slap bass technique",
                "bass guitar for beginners",
                "walking bass lines in jazz",
                "best bass riffs of all time",
                "five-string bass setup",
                "fretless bass tone",
                "bass amp and pedal rig",
                "locking in with the drummer",
            ),
            subtopic_queries=(
                "slap bass tutorial",
                "beginner bass guitar lesson",
                "walking bass line",
                "best bass riffs",
                "5 string bass setup",
                "fretless bass tone",
                "bass amp pedal rig",
                "bass groove with drummer",
            ),
            aliases=(
                "the four-string guitar",
                "the low-end instrument",
                "the Fender Precision",
                "the electric low-end guitar",
            ),
            facts=(
                "A standard bass guitar has four strings tuned E, A, D and G, an octave below a guitar's lowest four.",
                "Leo Fender introduced the Precision Bass in 1951.",
                "Slap technique was popularized by Larry Graham in the late 1960s.",
                "Fretless instruments give a smooth, singing tone similar to an upright.",
                "Five-string models add a low B string for deeper notes.",
                "In most bands the instrument locks in with the kick drum to form the rhythm section.",
                "Jaco Pastorius was famous for his fretless playing with Weather Report.",
                "Flea of the Red Hot Chili Peppers is known for his energetic slap-and-pop style.",
            ),
            hashtags=("bassguitar", "bassist", "music", "bassline", "musician"),
        ),
        Sense(
            word="bass",
            name="fish",
            label="the fish",
            domain="outdoors",
            sense_query="bass fishing",
            subtopics=(
                "largemouth bass fishing tips",
                "topwater lures for bass",
                "catching smallmouth bass in rivers",
                "bass fishing from a kayak",
                "pre-spawn bass patterns",
                "rigging a texas rig for bass",
                "striped bass in the surf",
                "catch and release best practices",
            ),
            subtopic_queries=(
                "largemouth bass fishing tips",
                "topwater bass lures",
                "smallmouth bass river fishing",
                "kayak bass fishing",
                "prespawn bass fishing",
                "texas rig bass",
                "striped bass surf fishing",
                "bass catch and release",
            ),
            aliases=(
                "the bucketmouth",
                "Micropterus salmoides",
                "America's favorite freshwater gamefish",
                "the lunker gamefish",
            ),
            facts=(
                "Largemouth bass are the most popular freshwater sport fish in the United States.",
                "Despite the name, largemouth and smallmouth belong to the sunfish family.",
                "Striped bass live in the ocean and swim up rivers to spawn.",
                "Many anglers release their catch to help keep fish populations healthy.",
                "Topwater lures work best in low light, such as at dawn and dusk.",
                "A Texas rig keeps a soft plastic bait weedless by burying the hook point in the lure.",
                "The world-record largemouth, caught in Georgia in 1932, weighed 22 pounds 4 ounces.",
                "Professional tournament circuits such as Bassmaster draw big crowds and prize money.",
            ),
            hashtags=("fishing", "bassfishing", "angler", "outdoors", "fishinglife"),
        ),
    ),
)

_CRANE = Word(
    "crane",
    (
        Sense(
            word="crane",
            name="construction",
            label="the construction crane",
            domain="construction",
            sense_query="construction crane",
            subtopics=(
                "life as a tower crane operator",
                "how tower cranes build themselves",
                "mobile crane heavy lift",
                "crane collapse investigations",
                "climbing a crane at sunrise",
                "crane load chart basics",
                "assembling a crawler crane",
                "skyscraper steel erection",
            ),
            subtopic_queries=(
                "tower crane operator",
                "how tower cranes grow taller",
                "mobile crane heavy lift",
                "crane collapse causes",
                "climbing tower crane",
                "crane load chart",
                "crawler crane assembly",
                "crane skyscraper steel",
            ),
            aliases=(
                "the tower jib",
                "the heavy lifting machine",
                "the lifting rig on the skyline",
                "the Liebherr lifter",
            ),
            facts=(
                "Tower cranes often raise themselves using a climbing frame that inserts new mast sections.",
                "Operators usually climb ladders inside the mast to reach the cab, sometimes hundreds of feet up.",
                "A load chart tells the operator how much weight can be lifted at each radius.",
                "Counterweights on the rear of the jib keep the machine balanced.",
                "Crawler cranes move on tracks, which spread their weight over soft ground.",
                "Wind speed limits are strict because gusts can swing a suspended load.",
                "The Romans used human-powered treadwheel cranes to lift heavy stone.",
                "Signal persons use standard hand signals to guide lifts the operator cannot see.",
            ),
            hashtags=("construction", "heavyequipment", "engineering", "building", "towercrane"),
        ),
        Sense(
            word="crane",
            name="bird",
            label="the bird",
            domain="wildlife",
            sense_query="crane bird",
            subtopics=(
                "sandhill crane migration in nebraska",
                "red-crowned crane mating dance",
                "whooping crane conservation",
                "how to tell cranes from herons",
                "grey crowned crane close up",
                "crane chicks with their parents",
                "cranes calling at dawn",
                "wetland birdwatching at sunrise",
            ),
            subtopic_queries=(
                "sandhill crane migration",
                "red crowned crane dance",
                "whooping crane recovery",
                "crane vs heron",
                "grey crowned crane",
                "baby crane chicks",
                "crane bird call",
                "crane birdwatching wetland",
            ),
            aliases=(
                "the long-legged wetland bird",
                "Gruidae",
                "the dancing marsh bird",
                "the red-crowned bird of Hokkaido",
            ),
            facts=(
                "There are 15 species of crane, found on every continent except Antarctica and South America.",
                "Sandhill cranes gather in huge numbers along Nebraska's Platte River each spring.",
                "The whooping crane fell to fewer than 25 birds in the 1940s and has since slowly recovered.",
                "Pairs perform elaborate dances of leaping, bowing and wing flapping.",
                "Unlike herons, they fly with their necks stretched straight out.",
                "In Japan the red-crowned species is a symbol of luck and long life.",
                "A coiled windpipe gives many species their loud, trumpeting call.",
                "Chicks can leave the nest and walk within a day of hatching.",
            ),
            hashtags=("birds", "birding", "wildlife", "nature", "birdwatching"),
        ),
    ),
)

_MOUSE = Word(
    "mouse",
    (
        Sense(
            word="mouse",
            name="computer",
            label="the computer mouse",
            domain="tech",
            sense_query="computer mouse",
            subtopics=(
                "gaming mouse sensor test",
                "ergonomic vertical mouse review",
                "wireless mouse latency comparison",
                "fixing a double-clicking mouse",
                "mouse dpi and sensitivity settings",
                "douglas engelbart's first mouse",
                "lightweight mouse for fps games",
                "trackballs and touchpads compared",
            ),
            subtopic_queries=(
                "gaming mouse sensor",
                "vertical mouse review",
                "wireless mouse latency",
                "mouse double click fix",
                "mouse dpi settings",
                "first computer mouse history",
                "lightweight fps mouse",
                "mouse vs trackball",
            ),
            aliases=(
                "the pointing device",
                "the desktop pointer",
                "the optical pointer",
                "the clicker on your desk",
            ),
            facts=(
                (
                    "Douglas Engelbart's team built the first mouse prototype "
                    "in a wooden shell and showed it publicly in 1968."
                ),
                "Optical sensors track movement by taking thousands of tiny images of the surface every second.",
                "DPI describes how far the cursor moves for each inch of physical movement.",
                "Polling rate is how many times per second the device reports its position to the computer.",
                "Vertical designs keep the forearm in a handshake position to reduce wrist strain.",
                "Worn switches are a common cause of unwanted double clicks.",
                "Competitive gamers often prefer lightweight models weighing under 60 grams.",
                "The Xerox Alto of 1973 was one of the first computers designed around a mouse.",
            ),
            hashtags=("pcsetup", "gaming", "tech", "desksetup", "peripherals"),
        ),
        Sense(
            word="mouse",
            name="animal",
            label="the small rodent",
            domain="wildlife",
            sense_query="mouse small rodent",
            subtopics=(
                "field mouse building a nest",
                "pet mouse cage setup",
                "how mice squeeze through tiny gaps",
                "newborn mouse pups growing up",
                "harvest mouse climbing wheat",
                "catching a mouse humanely",
                "what pet mice eat",
                "owls hunting small rodents at night",
            ),
            subtopic_queries=(
                "field mouse nest",
                "pet mouse cage setup",
                "mouse squeezing through gaps",
                "baby mouse growing up",
                "harvest mouse wheat",
                "humane mouse catch",
                "pet mouse diet",
                "owl hunting mouse",
            ),
            aliases=(
                "the tiny long-tailed rodent",
                "Mus musculus",
                "the house rodent",
                "the whiskered little rodent",
            ),
            facts=(
                "The house mouse is one of the most widespread mammals on Earth.",
                "Mice can squeeze through gaps about the width of a pencil.",
                "Their incisors never stop growing, so they gnaw constantly to keep them short.",
                "Females can give birth to a new litter roughly every three weeks.",
                "Pups are born blind and hairless and open their eyes after about two weeks.",
                "Harvest mice use their tails to grip stalks as they climb.",
                "Pet rodents need a deep layer of bedding because they love to burrow.",
                "Owls, foxes, snakes and cats are among their main predators.",
            ),
            hashtags=("animals", "cuteanimals", "wildlife", "rodents", "nature"),
        ),
    ),
)

_MUSTANG = Word(
    "mustang",
    (
        Sense(
            word="mustang",
            name="car",
            label="the Ford Mustang",
            domain="cars",
            sense_query="ford mustang car",
            subtopics=(
                "1967 ford mustang fastback restoration",
                "mustang gt v8 cold start",
                "the electric mustang mach-e",
                "mustang shelby gt500 launch control",
                "ford mustang acceleration test",
                "first generation mustang history",
                "mustang drifting at a car meet",
                "american muscle car burnouts",
            ),
            subtopic_queries=(
                "1967 mustang fastback",
                "mustang gt cold start",
                "mustang mach e range",
                "shelby gt500 mustang",
                "ford mustang acceleration",
                "mustang history 1964",
                "mustang drifting car meet",
                "mustang muscle car burnout",
            ),
            aliases=(
                "Ford's pony car",
                "the original pony car",
                "the Ford V8 coupe",
                "the galloping-horse Ford",
            ),
            facts=(
                "Ford unveiled the Mustang at the New York World's Fair in April 1964.",
                "It created the pony car class of affordable, sporty coupes with long hoods and short rear decks.",
                "Carroll Shelby built high-performance versions such as the GT350 and GT500.",
                "Steve McQueen drove a 1968 Mustang GT fastback in the film Bullitt.",
                "The nameplate has been in continuous production since 1964.",
                "The all-electric Mach-E crossover went on sale in late 2020.",
                "Its galloping horse badge faces left.",
                "The seventh generation, known internally as S650, debuted for the 2024 model year.",
            ),
            hashtags=("cars", "musclecar", "ford", "v8", "carsoftiktok"),
        ),
        Sense(
            word="mustang",
            name="horse",
            label="the wild horse",
            domain="wildlife",
            sense_query="wild mustang horse",
            subtopics=(
                "wild mustangs running free in nevada",
                "mustang stallions fighting",
                "blm mustang roundups",
                "gentling an adopted mustang",
                "mustang herds of the pryor mountains",
                "spanish origins of the mustang",
                "mustang foals with the herd",
                "wild horses on the outer banks",
            ),
            subtopic_queries=(
                "wild mustangs running",
                "mustang stallion fight",
                "blm mustang roundup",
                "training adopted mustang",
                "pryor mountain mustangs",
                "mustang horse origins",
                "mustang foal herd",
                "outer banks wild mustangs",
            ),
            aliases=(
                "the free-roaming horse of the American West",
                "the feral horse",
                "the Spanish colonial horse's descendant",
                "the wild horse of the Great Basin",
            ),
            facts=(
                "Mustangs are free-roaming descendants of horses brought to the Americas by the Spanish.",
                "The name comes from the Spanish word mesteño, meaning stray or ownerless.",
                "The Bureau of Land Management oversees tens of thousands of wild horses on public land.",
                "A typical band includes one stallion, several mares and their foals.",
                "The Wild Free-Roaming Horses and Burros Act of 1971 protects them on federal land.",
                "Adopted mustangs can be gentled and trained for riding with patience.",
                "Nevada has more wild horses than any other US state.",
                "Their hooves are hardened by travel over rocky ground, so many never need shoes.",
            ),
            hashtags=("horses", "wildhorses", "wildlife", "equestrian", "nature"),
        ),
    ),
)

_BAT = Word(
    "bat",
    (
        Sense(
            word="bat",
            name="sports",
            label="the baseball or cricket bat",
            domain="sports",
            sense_query="baseball cricket bat",
            subtopics=(
                "choosing a baseball bat size",
                "wooden versus aluminum bats",
                "knocking in a new cricket bat",
                "how willow cricket bats are made",
                "legendary bat flip celebrations",
                "swing speed with a weighted bat",
                "breaking a bat on a fastball",
                "a baseball bat's sweet spot",
            ),
            subtopic_queries=(
                "baseball bat size chart",
                "wood vs aluminum bat",
                "knocking in cricket bat",
                "cricket bat making willow",
                "best bat flips",
                "weighted bat swing training",
                "broken bat fastball",
                "bat sweet spot",
            ),
            aliases=(
                "the wooden club",
                "the willow blade",
                "the Louisville Slugger",
                "the hitter's lumber",
            ),
            facts=(
                "Major League Baseball requires bats made from a single piece of solid wood.",
                "Cricket bats are traditionally made from English willow.",
                "A new willow blade should be knocked in with a mallet before use to harden the face.",
                "Aluminum and composite models are common in youth and college baseball.",
                "The sweet spot is the area of the barrel that transfers the most energy to the ball.",
                "Louisville Slugger has been making baseball lumber in Kentucky since the 1880s.",
                "Maple and ash are the most common woods for professional baseball.",
                "A cricket blade may be no wider than 4.25 inches under the Laws of Cricket.",
            ),
            hashtags=("baseball", "cricket", "mlb", "sports", "hitting"),
        ),
        Sense(
            word="bat",
            name="animal",
            label="the flying mammal",
            domain="wildlife",
            sense_query="bat flying mammal",
            subtopics=(
                "how bats use echolocation",
                "fruit bats eating mango",
                "vampire bats sharing blood meals",
                "millions of bats leaving a cave",
                "rescuing a baby bat",
                "building a bat house",
                "why bats hang upside down",
                "flying foxes roosting in trees",
            ),
            subtopic_queries=(
                "how bats echolocate",
                "fruit bat eating",
                "vampire bat behavior",
                "bats leaving cave at dusk",
                "baby bat rescue",
                "diy bat house",
                "bats hanging upside down",
                "flying fox bat roost",
            ),
            aliases=(
                "the flying mammal",
                "Chiroptera",
                "the flying fox",
                "the night-flying echolocator",
            ),
            facts=(
                "Bats are the only mammals capable of true sustained flight.",
                "Many species find insects in total darkness using echolocation.",
                "Bracken Cave in Texas hosts one of the largest bat colonies in the world.",
                "Vampire species sometimes regurgitate blood to feed roostmates that failed to find a meal.",
                "Fruit-eating species are important pollinators and seed dispersers, including for agave.",
                "Their knees face backward, which helps them hang upside down with little effort.",
                "More than 1,400 species make up about a fifth of all mammal species.",
                "Insect-eating species can catch hundreds of small insects in an hour.",
            ),
            hashtags=("bats", "wildlife", "nature", "animals", "nocturnal"),
        ),
    ),
)

_CHIP = Word(
    "chip",
    (
        Sense(
            word="chip",
            name="semiconductor",
            label="the semiconductor chip",
            domain="tech",
            sense_query="computer chip semiconductor",
            subtopics=(
                "how a computer chip is made",
                "inside a chip fab cleanroom",
                "the global chip shortage",
                "euv lithography machines",
                "3nm chip manufacturing",
                "chip design from transistor to layout",
                "tsmc and the chip supply chain",
                "moore's law slowing down",
            ),
            subtopic_queries=(
                "how computer chips are made",
                "chip fab cleanroom",
                "chip shortage explained",
                "euv lithography chip",
                "3nm chip process",
                "chip design basics",
                "tsmc chip supply chain",
                "moore's law chip",
            ),
            aliases=(
                "the integrated circuit",
                "the semiconductor die",
                "the silicon processor",
                "the silicon die",
            ),
            facts=(
                "Jack Kilby and Robert Noyce independently invented the integrated circuit in 1958 and 1959.",
                "Modern processors contain tens of billions of transistors.",
                "Chips are made on thin silicon wafers in ultra-clean factories called fabs.",
                "Extreme ultraviolet lithography machines are built by a single company, the Dutch firm ASML.",
                "Taiwan's TSMC is the world's largest contract semiconductor manufacturer.",
                "Moore's law observed that transistor counts doubled roughly every two years.",
                "A global chip shortage from 2020 to 2023 delayed the production of cars and game consoles.",
                "Cleanroom workers wear full-body suits because a single dust particle can ruin a circuit.",
            ),
            hashtags=("semiconductors", "tech", "engineering", "electronics", "hardware"),
        ),
        Sense(
            word="chip",
            name="snack",
            label="potato chips, the snack",
            domain="food",
            sense_query="potato chips snack",
            subtopics=(
                "air fryer potato chips",
                "inside a potato chip factory",
                "chip flavor blind taste test",
                "kettle-cooked chips versus regular",
                "tortilla chips and fresh salsa",
                "weird chip flavors from japan",
                "why chip bags are half air",
                "a crunchy snack aisle haul",
            ),
            subtopic_queries=(
                "air fryer potato chips",
                "potato chip factory",
                "chip flavor taste test",
                "kettle chips vs regular chips",
                "tortilla chips salsa",
                "japanese chip flavors",
                "why chip bags have air",
                "best chips snack haul",
            ),
            aliases=(
                "crisps",
                "the crunchy fried potato snack",
                "the salty bagged snack",
                "Lay's and Pringles",
            ),
            facts=(
                "Potato chips are one of the best-selling salty snacks in the United States.",
                "Snack bags are filled with nitrogen to keep the contents fresh and cushion them from breaking.",
                "In Britain and Ireland thin fried potato slices are called crisps.",
                "A popular legend credits chef George Crum of Saratoga Springs with inventing them in 1853.",
                "Kettle-cooked chips are fried in batches, which makes them thicker and crunchier.",
                "Tortilla chips are made from corn masa cut into triangles and fried or baked.",
                "Japan is known for unusual limited-edition flavors such as seaweed and wasabi.",
                "Slicing potatoes thinly and evenly is the key to crispy homemade batches.",
            ),
            hashtags=("snacks", "food", "foodie", "tastetest", "junkfood"),
        ),
    ),
)

WORDS: tuple[Word, ...] = (
    _TRANSFORMER,
    _PYTHON,
    _JAGUAR,
    _APPLE,
    _MERCURY,
    _JAVA,
    _BASS,
    _CRANE,
    _MOUSE,
    _MUSTANG,
    _BAT,
    _CHIP,
)

SENSES: tuple[Sense, ...] = tuple(s for w in WORDS for s in w.senses)


# ------------------------------------------------------------------------------------------------ distractors

DISTRACTORS: tuple[Topic, ...] = (
    Topic(
        key="programming/distractor",
        domain="programming",
        subtopics=(
            "rust ownership and borrowing",
            "javascript async await basics",
            "git branching for beginners",
            "sql joins with real examples",
            "convolutional neural networks for images",
            "recurrent neural networks and lstms",
            "c++ pointers and memory",
            "gradient descent intuition",
        ),
        subtopic_queries=(
            "rust ownership explained",
            "javascript async await",
            "git branching tutorial",
            "sql joins examples",
            "convolutional neural network tutorial",
            "lstm recurrent neural network",
            "c++ pointers tutorial",
            "gradient descent explained",
        ),
        facts=(
            "Rust enforces memory safety at compile time through its ownership rules.",
            "JavaScript was created by Brendan Eich in 1995 in about ten days.",
            "Git was written by Linus Torvalds in 2005 to manage Linux kernel development.",
            "SQL joins combine rows from two or more tables based on a related column.",
            "Convolutional neural networks learn filters that detect edges, textures and shapes in images.",
            "Long short-term memory networks were introduced by Hochreiter and Schmidhuber in 1997.",
            "Gradient descent updates model weights in the direction that reduces the loss.",
            "C++ was created by Bjarne Stroustrup as an extension of the C language.",
        ),
        hashtags=("coding", "programming", "developer", "softwareengineering", "machinelearning"),
    ),
    Topic(
        key="energy/distractor",
        domain="energy",
        subtopics=(
            "how solar panels make electricity",
            "wind turbine blade installation",
            "high-voltage power line workers",
            "home battery storage systems",
            "how a hydroelectric dam works",
            "upgrading an old electrical panel",
            "inside a nuclear reactor control room",
            "smart meters and electricity bills",
        ),
        subtopic_queries=(
            "how solar panels work",
            "wind turbine installation",
            "lineman high voltage work",
            "home battery storage",
            "hydroelectric dam explained",
            "electrical panel upgrade",
            "nuclear power plant tour",
            "smart meter electricity bill",
        ),
        facts=(
            "Solar cells convert sunlight directly into electricity using the photovoltaic effect.",
            "Blades on the largest modern wind turbines are more than 100 meters long.",
            "Overhead power lines carry electricity at high voltage to reduce losses over long distances.",
            "Home battery systems store solar power for use at night or during outages.",
            "Hydroelectric dams spin turbines using the force of falling water.",
            "Circuit breakers cut power automatically when a circuit draws too much current.",
            "Nuclear plants boil water with heat from fission to drive steam turbines.",
            "Utility workers who build and repair power lines are often called linemen.",
        ),
        hashtags=("energy", "electricity", "renewableenergy", "solar", "engineering"),
    ),
    Topic(
        key="toys/distractor",
        domain="toys",
        subtopics=(
            "lego technic supercar build",
            "hot wheels track challenge",
            "vintage star wars action figures",
            "gundam model kit assembly",
            "nerf blaster modding",
            "remote control car off-road bash",
            "toy collection shelf tour",
            "blind box figure opening",
        ),
        subtopic_queries=(
            "lego technic build",
            "hot wheels track",
            "vintage star wars figures",
            "gundam model kit",
            "nerf blaster mods",
            "rc car off road",
            "toy collection tour",
            "blind box unboxing",
        ),
        facts=(
            "LEGO bricks made today still fit bricks made in 1958.",
            "Hot Wheels cars were introduced by Mattel in 1968.",
            "Kenner's original Star Wars figures from the late 1970s are highly sought after by collectors.",
            "Gundam plastic model kits, known as Gunpla, have been produced since 1980.",
            "Nerf started at the end of the 1960s with a foam ball marketed as safe to throw indoors.",
            "Hobby-grade remote control cars can exceed 60 miles per hour.",
            "Mint-in-box toys are usually worth far more than opened ones.",
            "Blind boxes hide which figure is inside until the package is opened.",
        ),
        hashtags=("toys", "collector", "actionfigures", "lego", "toycollection"),
    ),
    Topic(
        key="wildlife/distractor",
        domain="wildlife",
        subtopics=(
            "leopard cubs playing",
            "lion pride on the hunt",
            "green anaconda in the river",
            "great blue heron catching fish",
            "przewalski's horses on the steppe",
            "flying squirrels gliding at night",
            "shrews foraging in leaf litter",
            "cheetah sprint in slow motion",
        ),
        subtopic_queries=(
            "leopard cubs playing",
            "lion pride hunting",
            "green anaconda river",
            "heron catching fish",
            "przewalski horse steppe",
            "flying squirrel gliding",
            "shrew foraging",
            "cheetah slow motion sprint",
        ),
        facts=(
            "Leopards often drag their kills up into trees to keep them away from lions and hyenas.",
            "Lions are the only truly social big cats, living in groups called prides.",
            "The green anaconda is the heaviest snake in the world.",
            "Great blue herons stand motionless in shallow water before spearing fish with their bills.",
            "Przewalski's horse was reintroduced to Mongolia after going extinct in the wild.",
            "Flying squirrels glide using a furry membrane stretched between their wrists and ankles.",
            "Shrews have such a fast metabolism that they must eat almost constantly.",
            "A cheetah can top 90 kilometers per hour in a short sprint.",
        ),
        hashtags=("wildlife", "nature", "animals", "safari", "naturelovers"),
    ),
    Topic(
        key="cars/distractor",
        domain="cars",
        subtopics=(
            "porsche 911 track day",
            "chevrolet camaro ss review",
            "dodge challenger hellcat burnout",
            "bmw m3 as a daily driver",
            "aston martin db5 restoration",
            "tesla model 3 road trip",
            "detailing a black paint job",
            "learning to drive a manual",
        ),
        subtopic_queries=(
            "porsche 911 track day",
            "camaro ss review",
            "challenger hellcat burnout",
            "bmw m3 daily driver",
            "aston martin db5",
            "tesla model 3 road trip",
            "black car detailing",
            "how to drive manual",
        ),
        facts=(
            "The Porsche 911 has been in production since 1964.",
            "Chevrolet launched the Camaro in 1966 to compete in the sporty coupe market.",
            "The supercharged Hellcat engine produced more than 700 horsepower.",
            "BMW's M division began as a motorsport department in 1972.",
            "The Aston Martin DB5 became famous as James Bond's car in Goldfinger.",
            "The Tesla Model 3 became one of the best-selling electric cars in the world.",
            "A clay bar treatment removes contaminants from paint before polishing.",
            "A manual gearbox uses a clutch pedal to disconnect the engine while shifting.",
        ),
        hashtags=("cars", "carsoftiktok", "sportscars", "cartok", "automotive"),
    ),
    Topic(
        key="tech/distractor",
        domain="tech",
        subtopics=(
            "mechanical keyboard switch sounds",
            "samsung galaxy camera comparison",
            "budget pc build guide",
            "noise cancelling headphones review",
            "usb-c cable standards",
            "graphics card benchmark results",
            "clean desk setup tour",
            "google pixel hidden features",
        ),
        subtopic_queries=(
            "mechanical keyboard switches",
            "samsung galaxy camera test",
            "budget pc build",
            "noise cancelling headphones",
            "usb c cable types",
            "graphics card benchmark",
            "desk setup tour",
            "pixel phone features",
        ),
        facts=(
            "Mechanical keyboards use an individual switch under every key.",
            "Samsung is one of the largest smartphone makers in the world.",
            "A PC build needs a compatible motherboard, processor, memory, storage and power supply.",
            "Active noise cancelling uses microphones to create sound waves that cancel ambient noise.",
            "USB-C connectors are reversible, so they plug in either way up.",
            "Graphics cards are benchmarked by measuring frames per second in demanding games.",
            "Monitor arms free up desk space and make screen height adjustable.",
            "Google sells its own Pixel smartphones running Android.",
        ),
        hashtags=("tech", "gadgets", "techtok", "pcbuild", "desksetup"),
    ),
    Topic(
        key="food/distractor",
        domain="food",
        subtopics=(
            "sourdough bread scoring",
            "pear and ginger tart",
            "pulling the perfect espresso shot",
            "matcha latte at home",
            "homemade popcorn seasoning",
            "mango cutting hacks",
            "soft pretzel twisting technique",
            "cherry orchard harvest",
        ),
        subtopic_queries=(
            "sourdough scoring",
            "pear ginger tart recipe",
            "how to pull espresso shot",
            "matcha latte recipe",
            "popcorn seasoning ideas",
            "how to cut mango",
            "homemade soft pretzels",
            "cherry harvest orchard",
        ),
        facts=(
            "Sourdough rises with wild yeast and lactic acid bacteria instead of commercial yeast.",
            "Pears ripen best off the tree at room temperature.",
            "An espresso shot is brewed by forcing hot water through finely ground coffee under pressure.",
            "Matcha is made from shade-grown green tea leaves ground into a fine powder.",
            "Popcorn pops because water inside each kernel turns to steam and bursts the hull.",
            "Mangoes have a large flat seed, so they are best cut into cheeks on either side.",
            "Soft pretzels get their dark, shiny crust from a dip in an alkaline solution before baking.",
            "Sweet cherries are often picked by hand because the fruit bruises easily.",
        ),
        hashtags=("food", "foodie", "recipe", "baking", "homecafe"),
    ),
    Topic(
        key="space/distractor",
        domain="space",
        subtopics=(
            "the rings of saturn up close",
            "mars rover landing footage",
            "venus and its runaway greenhouse effect",
            "jupiter's great red spot",
            "total solar eclipse timelapse",
            "james webb telescope deep field",
            "how black holes form",
            "spotting planets with a backyard telescope",
        ),
        subtopic_queries=(
            "saturn rings",
            "mars rover landing",
            "venus greenhouse effect",
            "jupiter great red spot",
            "solar eclipse timelapse",
            "james webb deep field",
            "how black holes form",
            "backyard telescope planets",
        ),
        facts=(
            "Saturn's rings are made mostly of chunks of water ice ranging from dust to house-sized pieces.",
            "NASA's Perseverance rover landed in Jezero Crater on Mars in February 2021.",
            "Venus is the hottest planet because its thick carbon dioxide atmosphere traps heat.",
            "Jupiter's Great Red Spot is a storm wider than Earth.",
            "During a total solar eclipse the Moon completely covers the Sun's bright disk.",
            "The James Webb Space Telescope launched on December 25, 2021.",
            "Stellar black holes form when very massive stars collapse at the end of their lives.",
            "Jupiter and Saturn are easy to spot in a small telescope on a clear night.",
        ),
        hashtags=("space", "astronomy", "nasa", "universe", "stargazing"),
    ),
    Topic(
        key="science/distractor",
        domain="science",
        subtopics=(
            "sodium reacting with water",
            "liquid nitrogen experiments",
            "elephant toothpaste reaction",
            "growing copper sulfate crystals",
            "lead poisoning in history",
            "gallium melting in your hand",
            "the periodic table song",
            "non-newtonian fluid experiments",
        ),
        subtopic_queries=(
            "sodium in water reaction",
            "liquid nitrogen experiment",
            "elephant toothpaste",
            "copper sulfate crystals",
            "lead poisoning history",
            "gallium melting hand",
            "periodic table song",
            "oobleck experiment",
        ),
        facts=(
            "Sodium reacts violently with water, producing hydrogen gas and heat.",
            "Liquid nitrogen boils at minus 196 degrees Celsius.",
            "Elephant toothpaste uses hydrogen peroxide and a catalyst to make a fast-rising foam.",
            "Bright blue copper sulfate crystals grow as a saturated solution cools and evaporates.",
            "Lead was widely used in paint and gasoline before its health effects led to bans.",
            "Gallium melts at about 30 degrees Celsius, just below body temperature.",
            "The modern periodic table grew out of Dmitri Mendeleev's 1869 arrangement of the elements.",
            "A mix of cornstarch and water acts like a solid when struck and a liquid when stirred.",
        ),
        hashtags=("science", "chemistry", "experiment", "stem", "scienceexperiment"),
    ),
    Topic(
        key="music/distractor",
        domain="music",
        subtopics=(
            "david bowie's ziggy stardust era",
            "fingerstyle acoustic guitar lesson",
            "drum fill ideas for beginners",
            "elton john live at dodger stadium",
            "how to sing with more power",
            "analog synthesizer sound design",
            "stadium rock concert crowds",
            "understanding the circle of fifths",
        ),
        subtopic_queries=(
            "ziggy stardust bowie",
            "fingerstyle guitar lesson",
            "easy drum fills",
            "elton john dodger stadium",
            "singing technique power",
            "analog synth sound design",
            "stadium rock concert",
            "circle of fifths",
        ),
        facts=(
            "David Bowie created the Ziggy Stardust persona for his 1972 album.",
            "Fingerstyle players pluck strings with individual fingers instead of a pick.",
            "A drum fill is a short break from the main groove that leads into the next section.",
            "Elton John played two sold-out shows at Dodger Stadium in 1975.",
            "Singers build vocal power through breath support rather than by straining the throat.",
            "Analog synthesizers shape sound with oscillators, filters and envelopes.",
            "The circle of fifths arranges the twelve keys by their number of sharps and flats.",
            "Electric guitars use magnetic pickups to turn string vibration into an electrical signal.",
        ),
        hashtags=("music", "musician", "rock", "guitar", "singing"),
    ),
    Topic(
        key="travel/distractor",
        domain="travel",
        subtopics=(
            "ubud rice terraces in bali",
            "island hopping in the philippines",
            "angkor wat sunrise tour",
            "bangkok night markets",
            "hiking mount rinjani on lombok",
            "komodo dragons on komodo island",
            "ha long bay cruise",
            "budget backpacking in southeast asia",
        ),
        subtopic_queries=(
            "ubud rice terraces bali",
            "philippines island hopping",
            "angkor wat sunrise",
            "bangkok night market",
            "mount rinjani hike",
            "komodo island tour",
            "ha long bay cruise",
            "southeast asia backpacking budget",
        ),
        facts=(
            "Bali is known for its Hindu temples and terraced rice fields.",
            "The Philippines is made up of more than 7,000 islands.",
            "Angkor Wat in Cambodia is the largest religious monument in the world.",
            "Bangkok's night markets sell street food, clothing and souvenirs late into the evening.",
            "Mount Rinjani on Lombok is the second highest volcano in Indonesia.",
            "Komodo dragons, the largest living lizards, live only on a few Indonesian islands.",
            "Ha Long Bay in Vietnam is dotted with about 1,600 limestone islands and islets.",
            "Many travelers in Southeast Asia get around by overnight bus, train and ferry.",
        ),
        hashtags=("travel", "wanderlust", "backpacking", "asia", "traveltok"),
    ),
    Topic(
        key="outdoors/distractor",
        domain="outdoors",
        subtopics=(
            "fly fishing for rainbow trout",
            "walleye jigging on the lake",
            "ice fishing for perch",
            "catching channel catfish at night",
            "northern pike on spoons",
            "kayak camping on a quiet lake",
            "tying a palomar knot",
            "crappie fishing around brush piles",
        ),
        subtopic_queries=(
            "fly fishing rainbow trout",
            "walleye jigging",
            "ice fishing perch",
            "night catfish fishing",
            "northern pike spoon",
            "kayak camping lake",
            "palomar knot",
            "crappie brush pile",
        ),
        facts=(
            "Rainbow trout are native to the Pacific drainages of North America.",
            "Walleye have reflective eyes that help them feed in low light.",
            "Ice anglers drill holes with an auger and fish through the frozen surface.",
            "Channel catfish find food with taste buds that cover their whole body.",
            "Northern pike are ambush predators that lurk in weed beds.",
            "The Palomar knot is one of the strongest and simplest knots for tying on a hook.",
            "Crappie often gather around sunken brush and submerged trees.",
            "Most US states require adults to buy a fishing license.",
        ),
        hashtags=("fishing", "outdoors", "angler", "fishinglife", "nature"),
    ),
    Topic(
        key="construction/distractor",
        domain="construction",
        subtopics=(
            "excavator digging a foundation",
            "pouring a concrete slab",
            "demolition of an old stadium",
            "bulldozer clearing land",
            "scaffolding on a high-rise",
            "timelapse of a skyscraper going up",
            "forklift operator training",
            "laying bricks at full speed",
        ),
        subtopic_queries=(
            "excavator digging",
            "concrete slab pour",
            "stadium demolition",
            "bulldozer clearing land",
            "high rise scaffolding",
            "skyscraper construction timelapse",
            "forklift training",
            "fast bricklaying",
        ),
        facts=(
            "Excavators use hydraulic cylinders to move the boom, arm and bucket.",
            "Concrete keeps gaining strength for weeks and is usually tested for its design strength at 28 days.",
            "Controlled demolitions use carefully timed charges so a building falls into its own footprint.",
            "Bulldozers push soil and rubble with a wide metal blade mounted on the front.",
            "Scaffolding must be inspected regularly to keep workers safe at height.",
            "The Burj Khalifa in Dubai has been the world's tallest building since 2010.",
            "Forklift operators need training and certification in many countries.",
            "An experienced bricklayer can lay hundreds of bricks in a day.",
        ),
        hashtags=("construction", "heavyequipment", "building", "engineering", "satisfying"),
    ),
    Topic(
        key="sports/distractor",
        domain="sports",
        subtopics=(
            "tennis serve technique",
            "golf driver swing tips",
            "hockey slapshot power",
            "table tennis rally highlights",
            "softball windmill pitching motion",
            "catching fly balls in the outfield",
            "field hockey dribbling drills",
            "a pitcher's curveball grip",
        ),
        subtopic_queries=(
            "tennis serve technique",
            "golf driver swing",
            "hockey slapshot",
            "table tennis rally",
            "windmill softball pitch",
            "catching fly balls",
            "field hockey dribbling",
            "curveball grip",
        ),
        facts=(
            "A tennis serve starts with a ball toss and uses the whole body to generate racket speed.",
            "Golf drivers have the longest shafts and largest heads of any club in the bag.",
            "A slapshot bends the hockey stick to store energy before the puck is released.",
            "Table tennis balls are 40 millimeters in diameter.",
            "Fastpitch softball pitchers throw underhand with a windmill arm motion.",
            "Outfielders track fly balls by keeping their eyes on the ball and running to where it will land.",
            "Field hockey sticks are flat on one side, and players may only hit the ball with that side.",
            "A curveball spins forward so that it drops as it approaches the plate.",
        ),
        hashtags=("sports", "athlete", "training", "highlights", "baseball"),
    ),
)


# ------------------------------------------------------------------------------------------------ plain topics

PLAIN_TOPICS: tuple[Topic, ...] = (
    Topic(
        key="cooking/pasta",
        domain="cooking",
        subtopics=(
            "fresh pasta dough by hand",
            "classic roman carbonara",
            "cacio e pepe technique",
            "homemade pesto genovese",
            "perfect al dente spaghetti",
            "ricotta ravioli from scratch",
            "one-pot tomato pasta",
            "lasagna layering tips",
        ),
        subtopic_queries=(
            "fresh pasta dough",
            "authentic carbonara recipe",
            "cacio e pepe",
            "homemade pesto",
            "al dente spaghetti",
            "ricotta ravioli",
            "one pot pasta",
            "lasagna recipe",
        ),
        facts=(
            "Traditional carbonara gets its creaminess from eggs, pecorino and pasta water rather than cream.",
            "Cacio e pepe needs only pasta, pecorino romano and black pepper.",
            "Pesto genovese is made with basil, pine nuts, garlic, olive oil and hard cheese.",
            "Al dente means the pasta is cooked until it is firm to the bite.",
            "Fresh egg pasta is usually made with about one egg per 100 grams of flour.",
            "Starchy pasta water helps sauces cling to the noodles.",
            "Durum wheat semolina gives dried pasta its firm texture.",
            "Lasagna is baked in layers of pasta sheets, sauce and cheese.",
        ),
        hashtags=("pasta", "cooking", "recipe", "italianfood", "homecooking"),
    ),
    Topic(
        key="fitness/home-workout",
        domain="fitness",
        subtopics=(
            "20-minute full body workout",
            "push-up progressions for beginners",
            "resistance band leg day",
            "core workout without equipment",
            "hiit cardio in a small apartment",
            "stretching routine after sitting",
            "bodyweight squat form",
            "morning mobility flow",
        ),
        subtopic_queries=(
            "full body home workout",
            "push up progression",
            "resistance band legs",
            "no equipment core workout",
            "apartment hiit cardio",
            "stretches for desk workers",
            "squat form tips",
            "morning mobility routine",
        ),
        facts=(
            "Adults are advised to get at least 150 minutes of moderate activity each week.",
            "Push-ups can be made easier by doing them against a wall or on the knees.",
            "Resistance bands add tension that increases as the band stretches.",
            "A plank works the deep core muscles that stabilize the spine.",
            "High-intensity interval training alternates short bursts of hard effort with rest.",
            "Regular stretching can improve flexibility and reduce stiffness.",
            "Keeping the knees in line with the toes is a key cue for a good squat.",
            "Consistency matters more than intensity for building a workout habit.",
        ),
        hashtags=("fitness", "homeworkout", "workout", "fitnessmotivation", "healthylifestyle"),
    ),
    Topic(
        key="gardening/tomatoes",
        domain="gardening",
        subtopics=(
            "pruning tomato suckers",
            "growing tomatoes in containers",
            "starting tomato seeds indoors",
            "staking and caging tomato plants",
            "blossom end rot fixes",
            "heirloom tomato varieties",
            "companion planting with basil",
            "harvesting tomatoes at peak ripeness",
        ),
        subtopic_queries=(
            "pruning tomato suckers",
            "container tomatoes",
            "tomato seed starting",
            "tomato cage vs stake",
            "blossom end rot",
            "heirloom tomato varieties",
            "basil companion planting",
            "when to pick tomatoes",
        ),
        facts=(
            "Tomatoes need at least six to eight hours of direct sunlight a day.",
            "Blossom end rot is linked to calcium uptake problems, often caused by uneven watering.",
            "Indeterminate varieties keep growing and producing fruit until frost.",
            "Determinate varieties stay compact and ripen most of their fruit at once.",
            "Seeds are usually started indoors six to eight weeks before the last frost.",
            "Heirloom varieties are open-pollinated and saved from seed for generations.",
            "Deep watering at the base of the plant helps prevent leaf diseases.",
            "Tomatoes are botanically fruits, although they are cooked like vegetables.",
        ),
        hashtags=("gardening", "tomatoes", "growyourownfood", "vegetablegarden", "gardentok"),
    ),
    Topic(
        key="pets/dog-training",
        domain="pets",
        subtopics=(
            "teaching a puppy to sit",
            "loose leash walking",
            "crate training a new puppy",
            "stopping a dog from barking",
            "recall training at the park",
            "clicker training basics",
            "separation anxiety in dogs",
            "teaching a dog to stay",
        ),
        subtopic_queries=(
            "puppy sit training",
            "loose leash walking",
            "crate training puppy",
            "stop dog barking",
            "dog recall training",
            "clicker training dog",
            "dog separation anxiety",
            "teach dog stay",
        ),
        facts=(
            "Positive reinforcement rewards the behavior you want so the dog repeats it.",
            "Short training sessions of five to ten minutes work best for puppies.",
            "A clicker marks the exact moment a dog does the right thing.",
            "Crates can become a safe den when introduced gradually with treats.",
            "Dogs respond to consistent cues, so everyone in the household should use the same words.",
            "Puppies have a key socialization window between about 3 and 14 weeks of age.",
            "High-value treats help keep a dog's attention in distracting places.",
            "Separation anxiety is often treated by building up time alone in very small steps.",
        ),
        hashtags=("dogtraining", "puppy", "dogsoftiktok", "dogs", "pets"),
    ),
    Topic(
        key="diy/woodworking",
        domain="diy",
        subtopics=(
            "building a simple bookshelf",
            "hand cut dovetail joints",
            "epoxy river table",
            "sanding and finishing hardwood",
            "a cutting board from scrap wood",
            "table saw safety basics",
            "pocket hole joinery",
            "restoring an old workbench",
        ),
        subtopic_queries=(
            "diy bookshelf build",
            "hand cut dovetails",
            "epoxy river table",
            "wood finishing tips",
            "scrap wood cutting board",
            "table saw safety",
            "pocket hole joinery",
            "workbench restoration",
        ),
        facts=(
            "Dovetail joints resist being pulled apart thanks to their interlocking wedge shape.",
            "Sanding through progressively finer grits gives a smooth surface before finishing.",
            "Hardwoods such as maple and walnut make durable cutting boards.",
            "A riving knife helps prevent kickback on a table saw.",
            "Pocket hole joints use angled screws driven through one board into another.",
            "Wood expands and contracts with humidity, so designs must allow for movement.",
            "Food-safe mineral oil is a common finish for kitchen boards.",
            "Measure twice, cut once is the oldest rule in the workshop.",
        ),
        hashtags=("woodworking", "diy", "maker", "woodwork", "handmade"),
    ),
    Topic(
        key="beauty/skincare",
        domain="beauty",
        subtopics=(
            "simple morning skincare routine",
            "how to apply sunscreen properly",
            "retinol for beginners",
            "double cleansing at night",
            "treating dry winter skin",
            "niacinamide serum review",
            "acne-friendly moisturizers",
            "layering skincare products in order",
        ),
        subtopic_queries=(
            "morning skincare routine",
            "how much sunscreen to use",
            "retinol beginner guide",
            "double cleansing",
            "dry skin winter routine",
            "niacinamide serum",
            "moisturizer for acne",
            "skincare layering order",
        ),
        facts=(
            "Dermatologists recommend a broad-spectrum sunscreen of SPF 30 or higher every day.",
            "Retinoids speed up cell turnover and can cause dryness when first introduced.",
            "Double cleansing uses an oil-based cleanser followed by a water-based one.",
            "Niacinamide is a form of vitamin B3 used to calm redness and support the skin barrier.",
            "Products are generally layered from thinnest to thickest texture.",
            "A humidifier can help keep skin from drying out in winter.",
            "Non-comedogenic products are formulated not to clog pores.",
            "Patch testing a new product on a small area can reveal irritation before full use.",
        ),
        hashtags=("skincare", "beauty", "skincareroutine", "glowingskin", "selfcare"),
    ),
    Topic(
        key="finance/budgeting",
        domain="finance",
        subtopics=(
            "the 50/30/20 budget rule",
            "building an emergency fund",
            "tracking spending with a spreadsheet",
            "paying off credit card debt",
            "zero-based budgeting",
            "saving money on groceries",
            "the cash envelope system",
            "budgeting on an irregular income",
        ),
        subtopic_queries=(
            "50 30 20 budget",
            "emergency fund how much",
            "budget spreadsheet template",
            "pay off credit card debt",
            "zero based budget",
            "save money groceries",
            "cash envelope method",
            "irregular income budget",
        ),
        facts=(
            "The 50/30/20 rule splits after-tax income into needs, wants and savings.",
            "Many planners suggest an emergency fund covering three to six months of expenses.",
            "Zero-based budgeting gives every dollar of income a job.",
            "The debt avalanche method pays off the highest-interest balance first.",
            "The debt snowball method pays off the smallest balance first for quick wins.",
            "Credit card interest compounds, so carrying a balance grows debt quickly.",
            "Meal planning and shopping lists help cut impulse purchases at the grocery store.",
            "Automating transfers to savings on payday makes saving the default.",
        ),
        hashtags=("budgeting", "personalfinance", "moneytips", "savingmoney", "financetok"),
    ),
    Topic(
        key="gaming/minecraft",
        domain="gaming",
        subtopics=(
            "minecraft survival base ideas",
            "redstone door tutorial",
            "finding diamonds fast in minecraft",
            "a medieval castle in minecraft",
            "minecraft speedrun strategies",
            "automatic farm designs",
            "defeating the ender dragon",
            "best minecraft seeds for building",
        ),
        subtopic_queries=(
            "minecraft survival base",
            "minecraft redstone door",
            "minecraft diamond level",
            "minecraft medieval castle",
            "minecraft speedrun",
            "minecraft auto farm",
            "ender dragon fight",
            "best minecraft seeds",
        ),
        facts=(
            "Minecraft was created by Markus Persson and fully released in 2011.",
            "It is the best-selling video game of all time.",
            "Redstone dust works like wiring, letting players build circuits and machines.",
            "Diamonds are most common deep underground, near the bottom of the world.",
            "The Ender Dragon is the final boss, found in a dimension called the End.",
            "Every world is generated from a seed, so sharing a seed recreates the same terrain.",
            "Creative mode gives players unlimited blocks and the ability to fly.",
            "Microsoft bought Mojang, the studio behind the game, in 2014.",
        ),
        hashtags=("minecraft", "gaming", "minecraftbuilds", "gamer", "videogames"),
    ),
    Topic(
        key="photography/portraits",
        domain="photography",
        subtopics=(
            "natural light portrait tips",
            "posing people who feel awkward",
            "golden hour photoshoot",
            "shooting portraits at 85mm",
            "editing skin tones in lightroom",
            "using a reflector outdoors",
            "creative phone portrait ideas",
            "headshot lighting setup",
        ),
        subtopic_queries=(
            "natural light portraits",
            "posing tips for photos",
            "golden hour photoshoot",
            "85mm portrait lens",
            "lightroom skin tones",
            "reflector photography",
            "phone portrait ideas",
            "headshot lighting setup",
        ),
        facts=(
            "Golden hour is the period shortly after sunrise or before sunset when light is soft and warm.",
            "An 85mm lens is a classic portrait focal length that flatters facial features.",
            "A wide aperture blurs the background and separates the subject.",
            "Reflectors bounce light back into shadows to even out a face.",
            "Focusing on the eye closest to the camera keeps a portrait looking sharp.",
            "Open shade gives soft, even light on a sunny day.",
            "Rembrandt lighting creates a small triangle of light on the shadowed cheek.",
            "Giving subjects something to do with their hands helps them relax in front of the camera.",
        ),
        hashtags=("photography", "portrait", "photooftheday", "photographytips", "camera"),
    ),
    Topic(
        key="languages/spanish",
        domain="languages",
        subtopics=(
            "spanish verbs ser and estar",
            "learning spanish with podcasts",
            "common spanish slang in mexico",
            "rolling your r in spanish",
            "the spanish past tense made easy",
            "daily phrases for travelers in spain",
            "how i became fluent in spanish",
            "the spanish subjunctive mood",
        ),
        subtopic_queries=(
            "ser vs estar",
            "spanish podcasts for learners",
            "mexican spanish slang",
            "how to roll r spanish",
            "spanish preterite imperfect",
            "spanish travel phrases",
            "become fluent in spanish",
            "spanish subjunctive",
        ),
        facts=(
            "Spanish is the second most spoken native language in the world after Mandarin Chinese.",
            "Ser is used for lasting traits, while estar is used for states and locations.",
            "The rolled r, or trill, is made by letting the tongue tip vibrate against the ridge behind the teeth.",
            "Spanish has two main simple past tenses, the preterite and the imperfect.",
            "The subjunctive expresses wishes, doubts and hypothetical situations.",
            "Mexico has the largest number of Spanish speakers of any country.",
            "Listening to podcasts every day is a popular way to improve comprehension.",
            "Spanish spelling is largely phonetic, so most words are pronounced as written.",
        ),
        hashtags=("learnspanish", "spanish", "languagelearning", "polyglot", "studytok"),
    ),
)


# ------------------------------------------------------------------------------------------------ templates

TITLE_FORMATS: tuple[str, ...] = (
    "{s} explained in 60 seconds",
    "POV: {s}",
    "{s} | full guide",
    "I tried {s} for a week",
    "{s} (you won't believe the ending)",
    "day 3 of learning about {s}",
    "things nobody tells you about {s}",
    "{s} in under a minute",
    "the truth about {s}",
    "{s} for complete beginners",
    "watch this if you care about {s}",
    "{s}: what the experts say",
    "3 facts about {s}",
    "why everyone is talking about {s}",
    "{s} - a quick breakdown",
    "rating {s} out of 10",
    "{s} but it's oddly satisfying",
    "reacting to {s}",
    "{s} deep dive",
    "my honest thoughts on {s}",
    "{s}? here's what happened",
    "how I got into {s}",
    "{s} myths debunked",
    "a beginner's take on {s}",
    "{s} #shorts",
    "the most underrated thing about {s}",
    "{s} in 4K",
    "wait for it... {s}",
    "{s}, but make it quick",
    "everything I learned about {s} this year",
)

CAPTION_OPENERS: tuple[str, ...] = (
    "Quick look at {s}.",
    "Everything you wanted to know about {s}.",
    "Today we're talking about {s}.",
    "A short clip on {s}.",
    "Here's my take on {s}.",
    "Let's break down {s}.",
    "Saving this one for later: {s}.",
    "New video on {s} is up.",
    "Ever wondered about {s}?",
    "This is your sign to learn about {s}.",
    "Part two of my series on {s}.",
    "A few notes on {s}.",
    "Can't stop thinking about {s}.",
    "In this video: {s}.",
    "Straight to the point on {s}.",
    "Bookmark this if you're into {s}.",
    "Everyone asked, so here it is: {s}.",
    "Sixty seconds on {s}.",
    "Short and sweet: {s}.",
    "Learning more about {s} every day.",
)


# ------------------------------------------------------------------------------------------------ angles


@dataclass(frozen=True)
class Angle:
    """A video's format or angle, the last word of a long-tail query ("jaguar cubs wild slow motion").

    ``forms`` name the angle with the words users type; ``gap_forms`` are how many creators name it instead
    (slang, hashtags, creator jargon, loanwords) and share no word with ``query``: the vocabulary gap.
    """

    name: str
    query: str  # what a user appends to a query, lower case
    forms: tuple[str, ...]  # title phrasings that contain the query's words
    gap_forms: tuple[str, ...]  # phrasings that share no word with the query


ANGLES: tuple[Angle, ...] = (
    Angle(
        "beginners",
        "for beginners",
        ("for beginners", "a guide for beginners"),
        ("101", "noob friendly starter pack", "ELI5 edition", "#newbie"),
    ),
    Angle(
        "slowmo",
        "slow motion",
        ("in slow motion", "slow motion clip"),
        ("slowmo", "at 240fps", "frame by frame", "#ralenti"),
    ),
    Angle(
        "compilation",
        "compilation",
        ("compilation", "best moments compilation"),
        ("supercut", "top 10 moments", "mashup", "#recopilacion"),
    ),
    Angle(
        "funny",
        "funny moments",
        ("funny moments", "funny moments caught on camera"),
        ("bloopers and fails", "lol I can't", "try not to laugh", "#jajaja"),
    ),
    Angle(
        "documentary",
        "documentary",
        ("mini documentary", "a short documentary"),
        ("the untold story", "doku", "full story, no cuts", "#longform"),
    ),
    Angle(
        "reaction",
        "reaction",
        ("reaction", "first reaction"),
        ("reacting live", "my face when", "first time seeing this", "#reacts"),
    ),
    Angle(
        "asmr",
        "asmr",
        ("asmr", "asmr no talking"),
        ("relaxing sounds, no voice", "tingles", "sleep aid sounds", "#satisfyingsounds"),
    ),
    Angle(
        "tutorial",
        "step by step tutorial",
        ("step by step tutorial", "tutorial, step by step"),
        ("how-to walkthrough", "tuto", "full process shown", "#diyguide"),
    ),
    Angle(
        "timelapse",
        "timelapse",
        ("timelapse", "a timelapse"),
        ("hyperlapse", "sped up 100x", "24 hours in 60 seconds", "#zeitraffer"),
    ),
    Angle(
        "explained",
        "explained simply",
        ("explained simply", "simply explained"),
        ("in plain words", "breakdown for everyone", "erklaert", "#eli5"),
    ),
    Angle("vlog", "vlog", ("vlog", "a daily vlog"), ("day in my life", "ditl", "come with me", "#dayinthelife")),
    Angle("4k", "4k", ("in 4k", "4k footage"), ("ultra hd", "2160p", "cinematic shot", "#uhd")),
)

ANGLE_TITLE_FORMATS: tuple[str, ...] = ("{s} {a}", "{a}: {s}", "{s} ({a})", "{s} | {a}", "{s}, {a}", "{s} - {a}")


# ------------------------------------------------------------------------------------------------ checks

# Surface forms that count as "mentioning" an ambiguous word when it must NOT appear (plurals, irregular forms).
_FORBIDDEN_FORMS: dict[str, tuple[str, ...]] = {
    "transformer": ("transformer", "transformers"),
    "python": ("python", "pythons"),
    "jaguar": ("jaguar", "jaguars"),
    "apple": ("apple", "apples"),
    "mercury": ("mercury",),
    "java": ("java",),
    "bass": ("bass", "basses"),
    "crane": ("crane", "cranes"),
    "mouse": ("mouse", "mouses", "mice"),
    "mustang": ("mustang", "mustangs"),
    "bat": ("bat", "bats", "batting", "batter", "batters", "batsman", "batsmen"),
    "chip": ("chip", "chips"),
}

_REQUIRED_WORDS = tuple(_FORBIDDEN_FORMS)


def _contains(text: str, word: str) -> bool:
    """The generator's notion of a mention: the word or the word + 's', on word boundaries, any case."""
    return re.search(rf"\b{re.escape(word)}s?\b", text, re.IGNORECASE) is not None


def _mentions_any_form(text: str, word: str) -> bool:
    forms = "|".join(re.escape(f) for f in _FORBIDDEN_FORMS.get(word, (word,)))
    return re.search(rf"\b(?:{forms})\b", text, re.IGNORECASE) is not None


def _n_words(text: str) -> int:
    return len(text.split())


def check_vocabulary() -> None:
    """Raise ValueError listing every broken invariant of this module's data."""
    errors: list[str] = []
    err = errors.append
    all_words = [w.word for w in WORDS]

    # words and senses
    if len(WORDS) != 12:
        err(f"expected 12 ambiguous words, got {len(WORDS)}")
    if len(set(all_words)) != len(all_words):
        err(f"duplicate ambiguous words: {all_words}")
    if set(all_words) != set(_REQUIRED_WORDS):
        err(f"ambiguous words {sorted(all_words)} differ from the required set {sorted(_REQUIRED_WORDS)}")
    keys: set[str] = set()
    sense_domains: set[str] = set()
    for w in WORDS:
        if w.word != w.word.lower() or " " in w.word:
            err(f"word {w.word!r} must be a lower-case single token")
        if not 2 <= len(w.senses) <= 3:
            err(f"{w.word}: expected 2-3 senses, got {len(w.senses)}")
        others = [o for o in all_words if o != w.word]
        for s in w.senses:
            k = f"{s.word}/{s.name}"
            where = f"sense {k}"
            if s.word != w.word:
                err(f"{where}: sense.word {s.word!r} != word {w.word!r}")
            if not re.fullmatch(r"[a-z0-9-]+", s.name):
                err(f"{where}: name must be lower case without spaces")
            if k in keys:
                err(f"duplicate sense key {k}")
            keys.add(k)
            if s.domain not in DOMAINS:
                err(f"{where}: domain {s.domain!r} not in DOMAINS")
            sense_domains.add(s.domain)
            if not s.label:
                err(f"{where}: empty label")
            # sense query
            if not _contains(s.sense_query, s.word):
                err(f"{where}: sense_query {s.sense_query!r} lacks the word")
            if not 2 <= _n_words(s.sense_query) <= 4:
                err(f"{where}: sense_query {s.sense_query!r} must have 2-4 words")
            if s.sense_query != s.sense_query.lower():
                err(f"{where}: sense_query {s.sense_query!r} must be lower case")
            # subtopics
            if len(s.subtopics) != 8:
                err(f"{where}: expected 8 subtopics, got {len(s.subtopics)}")
            if len(set(s.subtopics)) != len(s.subtopics):
                err(f"{where}: duplicate subtopics")
            for p in s.subtopics:
                if not 2 <= _n_words(p) <= 6:
                    err(f"{where}: subtopic {p!r} must have 2-6 words")
            n_with = sum(_contains(p, s.word) for p in s.subtopics)
            if n_with < 5:
                err(f"{where}: only {n_with} subtopics contain {s.word!r} (need >= 5)")
            # subtopic queries
            if len(s.subtopic_queries) != 8:
                err(f"{where}: expected 8 subtopic_queries, got {len(s.subtopic_queries)}")
            if len(set(s.subtopic_queries)) != len(s.subtopic_queries):
                err(f"{where}: duplicate subtopic_queries")
            for q in s.subtopic_queries:
                if not _contains(q, s.word):
                    err(f"{where}: subtopic query {q!r} lacks the word")
                if q != q.lower():
                    err(f"{where}: subtopic query {q!r} must be lower case")
                if not 2 <= _n_words(q) <= 5:
                    err(f"{where}: subtopic query {q!r} must have 2-5 words")
            # aliases
            if not 3 <= len(s.aliases) <= 5:
                err(f"{where}: expected 3-5 aliases, got {len(s.aliases)}")
            for a in s.aliases:
                if _mentions_any_form(a, s.word):
                    err(f"{where}: alias {a!r} contains the word")
            # facts
            if len(s.facts) != 8:
                err(f"{where}: expected 8 facts, got {len(s.facts)}")
            if len(set(s.facts)) != len(s.facts):
                err(f"{where}: duplicate facts")
            n_fact_word = sum(_mentions_any_form(f, s.word) for f in s.facts)
            if n_fact_word > len(s.facts) // 2:
                err(f"{where}: {n_fact_word} facts contain the word (at most half allowed)")
            # hashtags
            if not 4 <= len(s.hashtags) <= 6:
                err(f"{where}: expected 4-6 hashtags, got {len(s.hashtags)}")
            for h in s.hashtags:
                if not re.fullmatch(r"[a-z0-9]+", h):
                    err(f"{where}: hashtag {h!r} must be lower-case alphanumeric without '#'")
            if len(set(s.hashtags)) != len(s.hashtags):
                err(f"{where}: duplicate hashtags")
            # no other ambiguous word leaks into this sense's text (it would blur the other word's relevance)
            texts = (s.sense_query, *s.subtopics, *s.subtopic_queries, *s.aliases, *s.facts)
            for o in others:
                for t in texts:
                    if _mentions_any_form(t, o):
                        err(f"{where}: text {t!r} mentions the other ambiguous word {o!r}")

    if not 10 <= len(sense_domains) <= 14:
        err(f"senses use {len(sense_domains)} domains (aim for 10-14)")

    # topics (distractors and plain)
    def check_topic(t: Topic, where: str) -> None:
        if t.domain not in DOMAINS:
            err(f"{where}: domain {t.domain!r} not in DOMAINS")
        if not t.key.startswith(f"{t.domain}/"):
            err(f"{where}: key must start with '{t.domain}/'")
        for field_name, n in (("subtopics", 8), ("subtopic_queries", 8), ("facts", 8)):
            vals = getattr(t, field_name)
            if len(vals) != n:
                err(f"{where}: expected {n} {field_name}, got {len(vals)}")
            if len(set(vals)) != len(vals):
                err(f"{where}: duplicate {field_name}")
        for p in t.subtopics:
            if not 2 <= _n_words(p) <= 6:
                err(f"{where}: subtopic {p!r} must have 2-6 words")
        for q in t.subtopic_queries:
            if q != q.lower():
                err(f"{where}: query {q!r} must be lower case")
            if not 1 <= _n_words(q) <= 5:
                err(f"{where}: query {q!r} must have 1-5 words")
        if not 4 <= len(t.hashtags) <= 6:
            err(f"{where}: expected 4-6 hashtags, got {len(t.hashtags)}")
        for h in t.hashtags:
            if not re.fullmatch(r"[a-z0-9]+", h):
                err(f"{where}: hashtag {h!r} must be lower-case alphanumeric without '#'")
        for text in (t.key, *t.subtopics, *t.subtopic_queries, *t.facts, *t.hashtags):
            for o in all_words:
                if _mentions_any_form(text, o):
                    err(f"{where}: {text!r} mentions the ambiguous word {o!r}")

    topic_keys: set[str] = set()
    for t in (*DISTRACTORS, *PLAIN_TOPICS):
        if t.key in topic_keys or t.key in keys:
            err(f"duplicate topic key {t.key}")
        topic_keys.add(t.key)
        check_topic(t, f"topic {t.key}")

    distractor_domains = [t.domain for t in DISTRACTORS]
    for t in DISTRACTORS:
        if t.key != f"{t.domain}/distractor":
            err(f"distractor {t.key}: key must be '{t.domain}/distractor'")
    if len(set(distractor_domains)) != len(distractor_domains):
        err("more than one distractor topic for a domain")
    if set(distractor_domains) != sense_domains:
        missing = sorted(sense_domains - set(distractor_domains))
        extra = sorted(set(distractor_domains) - sense_domains)
        err(f"distractor domains must equal sense domains (missing {missing}, extra {extra})")

    if len(PLAIN_TOPICS) != 10:
        err(f"expected 10 plain topics, got {len(PLAIN_TOPICS)}")
    plain_domains = [t.domain for t in PLAIN_TOPICS]
    if len(set(plain_domains)) != len(plain_domains):
        err("plain topics must each have their own domain")
    overlap = sorted(set(plain_domains) & sense_domains)
    if overlap:
        err(f"plain-topic domains overlap sense domains: {overlap}")
    unused = sorted(set(DOMAINS) - sense_domains - set(plain_domains))
    if unused:
        err(f"DOMAINS entries used by nothing: {unused}")

    # subtopic phrases are unique across the whole file
    seen: dict[str, str] = {}
    owners = [(f"{s.word}/{s.name}", s.subtopics) for s in SENSES] + [
        (t.key, t.subtopics) for t in (*DISTRACTORS, *PLAIN_TOPICS)
    ]
    for owner, subs in owners:
        for p in subs:
            norm = " ".join(p.lower().split())
            if norm in seen and seen[norm] != owner:
                err(f"subtopic {p!r} appears in both {seen[norm]} and {owner}")
            seen.setdefault(norm, owner)
    if len(SENSES) != sum(len(w.senses) for w in WORDS):
        err("SENSES is out of sync with WORDS")

    # templates
    for name, templates, n in (("TITLE_FORMATS", TITLE_FORMATS, 30), ("CAPTION_OPENERS", CAPTION_OPENERS, 20)):
        if len(templates) != n:
            err(f"{name}: expected {n}, got {len(templates)}")
        if len(set(templates)) != len(templates):
            err(f"{name}: duplicates")
        for f in templates:
            if f.count("{s}") != 1 or f.count("{") != 1 or f.count("}") != 1:
                err(f"{name}: {f!r} must contain exactly one '{{s}}' slot and no other braces")
                continue
            for o in all_words:
                if _mentions_any_form(f.format(s=""), o):
                    err(f"{name}: {f!r} mentions the ambiguous word {o!r}")

    # angles: the gap forms share no word with what users type
    names = [a.name for a in ANGLES]
    if len(set(names)) != len(names):
        err("duplicate angle names")
    for a in ANGLES:
        qwords = set(re.findall(r"[a-z0-9]+", a.query))
        if a.query != a.query.lower() or not qwords:
            err(f"angle {a.name}: query {a.query!r} must be lower case and non-empty")
        for f in a.forms:
            if not qwords <= set(re.findall(r"[a-z0-9]+", f.lower())):
                err(f"angle {a.name}: form {f!r} lacks the query's words")
        for f in a.gap_forms:
            if qwords & set(re.findall(r"[a-z0-9]+", f.lower())):
                err(f"angle {a.name}: gap form {f!r} shares a word with {a.query!r}")
        for f in (*a.forms, *a.gap_forms):
            for o in all_words:
                if _mentions_any_form(f, o):
                    err(f"angle {a.name}: {f!r} mentions the ambiguous word {o!r}")

    if errors:
        raise ValueError("vocabulary check failed:\n  - " + "\n  - ".join(errors))
