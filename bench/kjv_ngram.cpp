// The n-gram baseline of discrete flow matching on the KJV (docs/DISCRETE.md, issue 22): interpolated
// Kneser–Ney of orders 2..8 fitted to the training books, held-out bits per character on the 7
// held-out books (every tenth book and Revelation). Built with -DFLOWMATCH_BUILD_BENCH=ON.
// usage: bench_kjv_ngram [DISCOUNT]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "flowmatch/data/text.h"
#include "flowmatch/ngram.h"

int main(int argc, char** argv) {
  namespace fm = flowmatch;
  const double discount = argc > 1 ? std::atof(argv[1]) : 0.75;
  const auto books = fm::data::read_kjv();
  std::string train, test;
  for (size_t k = 0; k < books.size(); ++k) {
    std::string& to = fm::data::kjv_book_is_held_out(static_cast<int64_t>(k), static_cast<int64_t>(books.size())) ? test : train;
    to += (to.empty() ? "" : " ") + fm::data::normalize_letters_and_spaces(books[k].text);
  }
  const auto& alphabet = fm::data::letters_and_space();
  const auto train_ids = fm::data::encode_text(train, alphabet), test_ids = fm::data::encode_text(test, alphabet);
  std::printf("train %zu characters, held out %zu (7 books), discount %.2f\n", train.size(), test.size(), discount);
  for (int64_t order = 2; order <= 8; ++order) {
    const auto start = std::chrono::steady_clock::now();
    fm::KneserNeyModel m(27, fm::KneserNeyOptions().order(order).discount(discount));
    m.fit(train_ids);
    const double nll = m.nll_per_token(test_ids);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("order %lld: %.4f bits/char (%.4f nats), %.1f s\n", static_cast<long long>(order), nll / std::log(2.0), nll, seconds);
  }
}
